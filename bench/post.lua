-- wrk: POST requests with a 1 KiB body (bench/ab.sh -s bench/post.lua).
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
