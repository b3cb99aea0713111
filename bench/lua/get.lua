-- GET the URL's path (a baseline request: no body, no Redis, no Postgres).
wrk.method = "GET"
