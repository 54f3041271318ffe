"""The wire contract in Python: the schema registry of schemas/, the Avro codec, the compatibility check and the
pydantic models generated from the schemas."""
