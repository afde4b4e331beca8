# A real OTLP/gRPC trace receiver for the tracing tests: the OpenTelemetry
# project's published protos (the opentelemetry-proto package, with its generated
# gRPC service) served by grpcio. Every span it receives becomes one JSON line in
# OUT, written and flushed before the Export call is answered:
#   {"trace_id", "span_id", "parent_span_id" (hex, "" for none), "name",
#    "kind" ("SERVER", "CLIENT", ...), "status" ("UNSET", "ERROR", "OK"),
#    "attributes": {key: value}, "resource": {key: value}}
#
#   otlp_receiver.py OUT      prints its port, serves until killed
import json, sys, threading
from concurrent import futures
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None

def attributes(pairs):
    return {pair.key: value(pair.value) for pair in pairs}

class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(json.dumps({
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": trace_pb2.Span.SpanKind.Name(span.kind).replace("SPAN_KIND_", ""),
                        "status": trace_pb2.Status.StatusCode.Name(span.status.code).replace("STATUS_CODE_", ""),
                        "attributes": attributes(span.attributes),
                        "resource": resource,
                    }))
        with self.lock:
            for line in lines:
                self.out.write(line + "\n")
            self.out.flush()
        return trace_service_pb2.ExportTraceServiceResponse()

def main():
    out = open(sys.argv[1], "a")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(out), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()

if __name__ == "__main__":
    main()
