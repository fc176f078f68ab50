"""One delivery path for every exporter: buffer -> batch -> encode -> send -> retry -> count.

Each exporter gets its own buffer and worker thread, so one slow or dead backend never slows another.
The buffer is in memory (a bounded deque, the default) or on disk (diskqueue.py): with
`buffer.type: disk` every accepted event is written through to the disk queue before put_many returns
and the worker reads batches back from it, so "accepted" means "survives SIGKILL" (at-least-once),
delivery stays FIFO, and memory stays bounded by one batch whatever the outage length. Write-through
rather than spill-on-full was chosen because a spill leaves the events still in memory at a crash
unaccounted for; its cost is one msgpack encode and one write() per put (measured in docs/benchmarks.md).

Every event that leaves without being acknowledged is counted in
siemhub_exporter_events_dropped{exporter, reason}; what the exporter gave up on (give-up answers,
failed items, retries exhausted, encoder errors, a memory queue cut by the shutdown deadline) is also
written to the dead-letter destination (deadletter.py). Queue/buffer-full drops are counted
only: shedding load by writing it to another file would not shed anything.

Batches in flight: an exporter whose backend answers asynchronously (Kafka's delivery reports) sets
`max_in_flight` > 1; the worker then submits the next batches while the oldest waits for its answer,
so throughput is not bound by one round trip per batch. Batches still finish strictly in order: a
later batch's answer waits until every batch before it is done or accounted for, so `finished` (the
watermark behind Pipeline.delivered and the aggregator's offset commits) never passes an undelivered
event. A batch that must be retried is retried alone (backoff, breaker, budget as below) while the
later ones finish in the background; no new batch is taken while the circuit is not closed. A disk
buffer keeps one batch in flight (its ack covers everything read).

A circuit breaker per exporter stops sending after `failure_threshold` retryable failures in a row,
waits `cooldown`, then probes with one batch; time spent open does not use up a batch's retry budget,
so during an outage events wait in the buffer instead of being dead-lettered batch after batch.

Modules, one concern each: `settings` (the delivery part of every exporter's config), `retry`
(backoff), `breaker` (circuit breaker), `buffers` (memory and disk buffers), `diskqueue` (the segment
files behind the disk buffer), `deadletter` (where given-up events go), `runner` (ExporterRunner: the
worker that drives one exporter through all of the above).
"""
