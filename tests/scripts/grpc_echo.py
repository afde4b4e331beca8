# A gRPC echo server and clients over Python grpcio (generic handlers over raw bytes,
# so no generated stubs), shared by the proxy's in-process tests and the end-to-end
# tests.
#
#   grpc_echo.py serve [NAME]                 prints its port, serves until killed;
#                                             NAME (default python) in x-served-by
#   grpc_echo.py served TARGET PATH           one unary call to PATH: its status and
#                                             x-served-by; JSON
#   grpc_echo.py client TARGET [EMPTY_TARGET] unary, trailers, an error with trailing
#                                             metadata, 2000 streamed messages; JSON
#   grpc_echo.py status TARGET                the status of one unary and one streaming
#                                             call, whatever it is; JSON
import json, sys
from concurrent import futures
import grpc

SERVICE = "weft.test.Echo"
OPTIONS = [("grpc.enable_http_proxy", 0)]
NAME = sys.argv[2] if sys.argv[1] == "serve" and len(sys.argv) > 2 else "python"

def unary(request, context):
    if request == b"fail":
        context.set_trailing_metadata((("x-reason", "asked-to-fail"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    context.set_trailing_metadata((("x-served-by", NAME),))
    return b"echo:" + request

def stream(request, context):
    context.set_trailing_metadata((("x-served-by", NAME),))
    for i in range(int(request.decode())):
        yield ("item-%06d;" % i).encode() * 100

def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()

def client(target, empty_target=None):
    out = {}
    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        call_unary = channel.unary_unary("/%s/Unary" % SERVICE)
        response, call = call_unary.with_call(b"hello", timeout=10)
        out["unary"] = response.decode()
        out["unary_trailers"] = dict(call.trailing_metadata())
        try:
            call_unary(b"fail", timeout=10)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            out["fail"] = {"code": e.code().name, "details": e.details(),
                           "trailers": dict(e.trailing_metadata() or ())}
        items = list(channel.unary_stream("/%s/Stream" % SERVICE)(b"2000", timeout=30))
        out["stream_count"] = len(items)
        out["stream_bytes"] = sum(len(i) for i in items)
        out["stream_last"] = items[-1][:12].decode()
    if empty_target is not None:
        with grpc.insecure_channel(empty_target, options=OPTIONS) as channel:
            try:
                channel.unary_unary("/%s/Unary" % SERVICE)(b"x", timeout=10)
                out["empty"] = "no error"
            except grpc.RpcError as e:
                out["empty"] = e.code().name
    print(json.dumps(out), flush=True)

def status(target):
    out = {}
    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        try:
            channel.unary_unary("/%s/Unary" % SERVICE)(b"hello", timeout=10)
            out["unary"] = "OK"
        except grpc.RpcError as e:
            out["unary"] = e.code().name
            out["unary_details"] = e.details()
        try:
            items = list(channel.unary_stream("/%s/Stream" % SERVICE)(b"3", timeout=10))
            out["stream"] = "OK" if len(items) == 3 else "SHORT"
        except grpc.RpcError as e:
            out["stream"] = e.code().name
    print(json.dumps(out), flush=True)

def served(target, path):
    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        try:
            _, call = channel.unary_unary(path).with_call(b"1", timeout=10)
            out = {"code": "OK", "served_by": dict(call.trailing_metadata()).get("x-served-by")}
        except grpc.RpcError as e:
            out = {"code": e.code().name}
    print(json.dumps(out), flush=True)

if sys.argv[1] == "serve":
    serve()
elif sys.argv[1] == "served":
    served(sys.argv[2], sys.argv[3])
elif sys.argv[1] == "status":
    status(sys.argv[2])
else:
    client(*sys.argv[2:4])
