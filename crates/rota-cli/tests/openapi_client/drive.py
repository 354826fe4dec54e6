"""Drives a real server with a client generated from its OpenAPI document (rota_client, made
by openapi-python-client): declare a queue, enqueue with each backoff form, fetch, fail,
read the job back. Exits non-zero, saying where, if any step does not go as documented."""

import sys

from rota_client import Client
from rota_client.api.jobs import enqueue, get_job
from rota_client.api.queues import declare_queue
from rota_client.api.work import fail, fetch
from rota_client.models import (
    BackoffFormType0,
    BackoffFormType1,
    ExponentialBackoff,
    FailRequest,
    FailureRequest,
    FetchRequest,
    FixedBackoff,
    NewJobRequest,
    QueueDeclareRequest,
)

client = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)
fixed = BackoffFormType1(fixed=FixedBackoff(interval="90s"))
queue = declare_queue.sync(name="generated", client=client, body=QueueDeclareRequest(backoff=fixed))
assert queue.backoff.fixed.interval == "1m 30s", queue
exponential = ExponentialBackoff(initial="90s", factor=2, max_="2h", jitter=0.1)
request = NewJobRequest(
    queue="generated", kind="report.build", args={"ids": [1, 2]}, tags=["gen"],
    backoff=BackoffFormType0(exponential=exponential),
)
answer = enqueue.sync_detailed(client=client, body=request)
assert answer.status_code == 200, answer
job = answer.parsed.job
assert job.args == {"ids": [1, 2]}, job.args
assert job.backoff.exponential.max_ == "2h", job.backoff
leased = fetch.sync(client=client, body=FetchRequest(worker="generated-1", queues=["generated"]))
assert [j.id for j in leased.jobs] == [job.id], leased
lease = leased.jobs[0]
failure = FailureRequest(job=lease.id, token=lease.lease_token, message="boom")
outcome = fail.sync(client=client, body=FailRequest(failures=[failure]))
assert outcome.results[0].state == "retryable", outcome
shown = get_job.sync(id=job.id, client=client)
assert shown.state == "retryable" and shown.errors[0].message == "boom", shown
print("generated client: ok")
