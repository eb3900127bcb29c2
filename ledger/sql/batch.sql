-- Many postings in one call: the job runner's high-volume path.


-- One posting given as JSON: {"kind", "account", "key_space", "key", ...the fields of
-- that kind's function}, passed on to that function.
CREATE FUNCTION ledger.post(p jsonb, p_now timestamptz)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account bigint := (p ->> 'account')::bigint;
    v_space text := p ->> 'key_space';
    v_key text := p ->> 'key';
BEGIN
    CASE p ->> 'kind'
    WHEN 'top_up' THEN
        RETURN ledger.top_up(v_account, v_space, v_key, (p ->> 'amount')::bigint, p ->> 'source',
                             p ->> 'operation', (p ->> 'expires_at')::timestamptz,
                             coalesce(p ->> 'memo', ''), p_now);
    WHEN 'debit' THEN
        RETURN ledger.debit(v_account, v_space, v_key, p ->> 'operation', (p ->> 'quantity')::bigint,
                            (p ->> 'amount')::bigint, p -> 'job', coalesce(p ->> 'memo', ''),
                            coalesce(p ->> 'api_key', ''), p_now);
    WHEN 'adjustment' THEN
        RETURN ledger.adjust(v_account, v_space, v_key, (p ->> 'amount')::bigint,
                             coalesce(p ->> 'memo', ''), p_now);
    WHEN 'reserve' THEN
        RETURN ledger.reserve(v_account, v_space, v_key, p ->> 'operation', (p ->> 'quantity')::bigint,
                              (p ->> 'amount')::bigint, p -> 'job',
                              make_interval(secs => (p ->> 'ttl_seconds')::double precision),
                              coalesce(p ->> 'api_key', ''), p_now);
    WHEN 'settle' THEN
        RETURN ledger.settle(v_account, v_space, v_key, (p ->> 'hold_id')::bigint,
                             (p ->> 'amount')::bigint, (p ->> 'quantity')::bigint, p_now);
    WHEN 'release' THEN
        RETURN ledger.release(v_account, v_space, v_key, (p ->> 'hold_id')::bigint, p_now);
    WHEN 'refund' THEN
        RETURN ledger.refund(v_account, v_space, v_key, p ->> 'job', (p ->> 'amount')::bigint,
                             p ->> 'operation', coalesce(p ->> 'api_key', ''), p_now);
    ELSE
        RETURN ledger.refusal('invalid_posting', format('No posting kind %L.', p ->> 'kind'));
    END CASE;
END;
$$;


-- A list of postings of any kinds on any accounts, in one transaction. The accounts are
-- locked first, in id order, so two batches can never deadlock. Each posting then stands
-- or falls alone, exactly as if sent by itself: a refused posting has written nothing
-- (its checks come before its writes) and is answered with its refusal in its place.
CREATE FUNCTION ledger.post_batch(p_postings jsonb, p_now timestamptz)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_posting jsonb;
    v_answers jsonb[] := '{}';
BEGIN
    PERFORM FROM ledger_account
      WHERE id IN (SELECT (p ->> 'account')::bigint FROM jsonb_array_elements(p_postings) AS p)
      ORDER BY id
      FOR NO KEY UPDATE;
    FOR v_posting IN SELECT value FROM jsonb_array_elements(p_postings) LOOP
        v_answers := v_answers || ledger.post(v_posting, p_now);
    END LOOP;
    RETURN to_jsonb(v_answers);
END;
$$;
