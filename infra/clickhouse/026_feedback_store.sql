-- Feedback names the store of the request it is about (attribute `store_id`, set by the gateway from the key's
-- store, by the POS client from the till's and by `--store` on the CLI): clients choose request ids, so two stores
-- may use the same one, and feedback is joined to its request on store_id and request_id both. Feedback written
-- before it named a store has store_id '' and joins no request. The struggle view joins ratings the same way.
ALTER TABLE switchyard.feedback ADD COLUMN IF NOT EXISTS store_id LowCardinality(String) MATERIALIZED attributes['store_id'];

CREATE OR REPLACE VIEW switchyard.struggle_flags AS
WITH
    audited AS
    (
        SELECT
            request_id,
            recorded_at,
            store_id,
            intent,
            route,
            verdict,
            provider,
            model,
            if(JSONType(record, 'request', 'customer_id') = 'Object',
               JSONExtractString(record, 'request', 'customer_id', 'string'),
               JSONExtractString(record, 'request', 'customer_id')) AS customer_id,
            JSONExtractInt(record, 'request', 'created_at') AS created_ms,
            verdict != 'ALLOW' OR JSONLength(record, 'governance', 'findings') > 0 AS governance_intervened,
            arrayExists(f -> JSONExtractString(f, 'action') NOT IN ('', 'allow'),
                        JSONExtractArrayRaw(record, 'answer', 'output_findings')) AS output_guard_acted,
            -- a custom model declining below its confidence threshold hands over by design: not a failure
            arrayExists(x -> NOT endsWith(JSONExtractString(x), ': answered')
                             AND NOT startsWith(JSONExtractString(x), 'answer_memory:'),
                        JSONExtractArrayRaw(record, 'answer', 'failover')) AS failed_over
        FROM switchyard.audit_records FINAL
    ),
    repeats AS
    (
        SELECT
            store_id,
            request_id,
            customer_id != '' AND next_ms > created_ms AND next_ms - created_ms <= 600000 AS asked_again
        FROM
        (
            SELECT
                store_id,
                request_id,
                customer_id,
                created_ms,
                leadInFrame(created_ms, 1, 0) OVER (PARTITION BY customer_id ORDER BY created_ms, request_id
                    ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_ms
            FROM audited
        )
    ),
    ratings AS
    (
        SELECT store_id, request_id, min(rating) AS lowest_rating
        FROM switchyard.feedback FINAL
        WHERE kind = 'RATING' AND rating IS NOT NULL
        GROUP BY store_id, request_id
    )
SELECT
    a.request_id AS request_id,
    a.recorded_at AS recorded_at,
    a.store_id AS store_id,
    a.intent AS intent,
    a.route AS route,
    a.verdict AS verdict,
    a.provider AS provider,
    a.model AS model,
    a.governance_intervened AS governance_intervened,
    a.output_guard_acted AS output_guard_acted,
    a.failed_over AS failed_over,
    r.asked_again AS asked_again,
    ifNull(f.lowest_rating, 0) BETWEEN 1 AND 2 AS low_rating,
    arrayFilter(x -> x != '', [
        if(a.governance_intervened, 'governance_intervened', ''),
        if(a.output_guard_acted, 'output_guard_acted', ''),
        if(a.failed_over, 'failed_over', ''),
        if(r.asked_again, 'asked_again', ''),
        if(ifNull(f.lowest_rating, 0) BETWEEN 1 AND 2, 'low_rating', '')
    ]) AS flags
FROM audited AS a
LEFT JOIN repeats AS r ON r.request_id = a.request_id AND r.store_id = a.store_id
LEFT JOIN ratings AS f ON f.request_id = a.request_id AND f.store_id = a.store_id;
