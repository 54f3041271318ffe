"""The learning loop: feedback in, training sets out of ClickHouse, custom models trained, registered, shadowed,
promoted into the route table and rolled back."""
