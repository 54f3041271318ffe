"""What every stage shares at run time: the stage contract, the Kafka worker, sinks, batching, caches and
reference tables. The wire contract (schemas, codec, models) is services.wire."""
