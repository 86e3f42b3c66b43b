"""An external gRPC client of the coordinator, in Python (grpcio), as a generic tool sees it.

Usage: grpc_client.py ADDRESS PROTO_DIR TOKEN JOB.yaml

1. grpc.health.v1: the overall status and each API's is SERVING;
2. server reflection (v1 and v1alpha) lists the services; the JobService descriptor is
   fetched through reflection and names its methods;
3. stubs generated from proto/tessera.proto (grpc_tools.protoc, into a temporary directory)
   submit JOB.yaml with the bearer token and watch it to its end.
Prints one JSON line: {"health": ..., "services": [...], "methods": [...], "states": [...]}.
"""

import json
import os
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha, reflection_pb2_grpc as v1alpha_grpc


def main(address, proto_dir, token, job):
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=20)

    health = health_pb2_grpc.HealthStub(channel)
    statuses = {}
    for name in ["", "tessera.v1.JobService", "tessera.v1.WorkerService"]:
        r = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        statuses[name or "(server)"] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    # Reflection, v1alpha (what grpcurl speaks by default) and v1.
    stub = v1alpha_grpc.ServerReflectionStub(channel)
    reply = next(iter(stub.ServerReflectionInfo(iter([v1alpha.ServerReflectionRequest(list_services="")]), timeout=10)))
    services = sorted(s.name for s in reply.list_services_response.service)
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    from google.protobuf.descriptor_pool import DescriptorPool

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    methods = [m.name for m in pool.FindServiceByName("tessera.v1.JobService").methods]
    try:
        from grpc_reflection.v1 import reflection_pb2 as v1, reflection_pb2_grpc as v1_grpc

        r1 = next(iter(v1_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([v1.ServerReflectionRequest(list_services="")]), timeout=10)))
        services_v1 = sorted(s.name for s in r1.list_services_response.service)
    except ImportError:
        services_v1 = None

    # Stubs generated from the protocol file, as a user would generate them.
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(proto_dir, "tessera.proto")])
    assert rc == 0, f"protoc failed: {rc}"
    sys.path.insert(0, out)
    import tessera_pb2
    import tessera_pb2_grpc

    jobs = tessera_pb2_grpc.JobServiceStub(channel)
    meta = [("authorization", f"Bearer {token}")]
    submitted = jobs.SubmitJob(tessera_pb2.SubmitJobRequest(spec_yaml=open(job).read()), metadata=meta, timeout=30)
    states = []
    for status in jobs.WatchJob(tessera_pb2.JobRef(job_id=submitted.job_id), metadata=meta, timeout=300):
        name = tessera_pb2.JobState.Name(status.state)
        if not states or states[-1] != name:
            states.append(name)
    final = jobs.GetJob(tessera_pb2.JobRef(job_id=submitted.job_id), metadata=meta, timeout=30)
    # A wrong token is refused.
    try:
        jobs.ListJobs(tessera_pb2.ListJobsRequest(), metadata=[("authorization", "Bearer wrong")], timeout=10)
        refused = None
    except grpc.RpcError as e:
        refused = e.code().name
    print(json.dumps({
        "health": statuses, "services": services, "services_v1": services_v1, "methods": methods,
        "states": states, "tasks_done": final.tasks_done, "tasks_total": final.tasks_total,
        "wrong_token": refused,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
