import os
from sqlalchemy import event, create_engine, text
from bench.common import services
from bench import dlr_apply
from shared.inbox import encode, InboxItem
from worker import ingest
from sqlalchemy.orm import Session

N=10000
with services("exp") as svc:
    dlr_apply.load_messages(svc.database_url, N)
    engine = create_engine(svc.database_url, pool_size=1)
    items=[InboxItem.from_json(encode("dlr", dlr_apply.report_for(i))[1]) for i in range(1,N+1)]
    notes=[]
    for k in range(0,N,500):
        last = k == N-500
        with Session(engine) as s, s.begin():
            if last:
                raw = s.connection().connection.driver_connection
                raw.add_notice_handler(lambda d: notes.append(d.message_primary))
                s.execute(text("LOAD 'auto_explain'; SET auto_explain.log_min_duration=0; SET auto_explain.log_analyze=on; SET auto_explain.log_buffers=on; SET client_min_messages=log"))
            ingest.apply_batch(s, items[k:k+500])
            if last:
                s.execute(text("SET client_min_messages=notice; SET auto_explain.log_min_duration=-1"))
    for n in notes:
        print(n[:6000]); print("-----")
    engine.dispose()
