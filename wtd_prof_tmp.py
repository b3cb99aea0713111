"""In-process profile of drain_inbox on N queued DLRs (temporary helper, not committed)."""
import cProfile, os, pstats, sys, time
from bench.common import services
from bench import dlr_apply

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
with services("prof") as svc:
    dlr_apply.load_messages(svc.database_url, N)
    dlr_apply.queue_reports(svc, N)
    os.environ.update(DATABASE_URL=svc.database_url, REDIS_URL=svc.redis_url, WEBHOOK_TOKEN="x"*32, API_TOKEN="y"*32,
                      AT_USERNAME="sandbox", AT_API_KEY="k", AT_VOICE_NUMBER="+254711082000")
    from shared.inbox import Inbox
    from worker.drain import drain_inbox
    import redis
    box = Inbox(redis.Redis.from_url(svc.redis_url))
    box.claim(1) and None  # warm scripts
    prof = cProfile.Profile()
    c0 = time.process_time(); t0 = time.perf_counter()
    prof.enable()
    n = drain_inbox(box, 500, 600)
    prof.disable()
    print("applied", n, "cpu us/DLR", (time.process_time() - c0) / N * 1e6, "wall", time.perf_counter() - t0)
    from shared.db import get_engine
    get_engine().dispose()
    st = pstats.Stats(prof); st.sort_stats("cumulative").print_stats(45)
    st.sort_stats("tottime").print_stats(25)
