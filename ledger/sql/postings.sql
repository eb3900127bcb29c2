-- One function per posting kind: the only place its rule lives. Each is one round trip
-- and one transaction (the caller's statement), a short sequence: lock the account,
-- replay a key posted before, check, write, record. Every check comes before the first
-- write, so a refused posting is answered with its refusal having written nothing, not
-- even its key (see steps.sql for the shared steps and the refusals' codes).
--
-- Every function takes the key's space ('client' for keys sent to the API, 'tally' for
-- Tally's own) and ``now``: when the posting happens (NULL: the moment the lock is held).
-- Each answers {"receipt": {...}, "replayed": bool, "notify": bool}, or a refusal.


-- Add credits as a new lot: a renewal, a pack, a promotion or a positive adjustment.
-- A credit to an overdrawn (unlimited) account pays the overdraft first.
CREATE FUNCTION ledger.top_up(
    p_account bigint, p_key_space text, p_key text, p_amount bigint, p_source text,
    p_operation text, p_expires_at timestamptz, p_memo text, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account := ledger.lock_account(p_account);
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_params jsonb := jsonb_build_object('amount', p_amount, 'source', p_source,
                                         'operation', p_operation, 'expires_at', p_expires_at);
    v_answer jsonb := coalesce(ledger.replay(p_account, p_key_space, p_key, 'top_up', v_params),
                               ledger.not_positive(p_amount));
    v_entry bigint;
BEGIN
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    v_entry := ledger.append(p_account, CASE WHEN p_source = 'adjustment' THEN 'adjustment' ELSE 'top_up' END,
                             p_operation, p_amount, v_now, p_memo => p_memo, p_source => p_source);
    INSERT INTO ledger_lot (account_id, source, amount, remaining, expires_at, expired, entry_id, created_at)
    VALUES (p_account, p_source, p_amount, p_amount - least(greatest(-v_account.balance, 0), p_amount),
            p_expires_at, false, v_entry, v_now);
    RETURN ledger.answer(p_account, p_key_space, p_key, 'top_up', v_params, v_now, p_amount, v_entry);
END;
$$;


-- Consume credits now for a job: ``amount``, or ``quantity`` of ``operation`` priced from
-- the price table. Refused unless the available credits (balance less held, lots past
-- their expiry not counted) cover it.
CREATE FUNCTION ledger.debit(
    p_account bigint, p_key_space text, p_key text, p_operation text, p_quantity bigint,
    p_amount bigint, p_job jsonb, p_memo text, p_api_key text, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account := ledger.lock_account(p_account);
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_cost jsonb := ledger.cost(p_operation, p_quantity, p_amount);
    v_budgets bigint[] := ledger.budgets_of(v_account, p_job, p_api_key);
    v_amount bigint;
    v_params jsonb;
    v_answer jsonb;
    v_entry bigint;
BEGIN
    IF v_cost ? 'error' THEN
        RETURN v_cost;
    END IF;
    v_amount := v_cost::bigint;
    v_params := jsonb_build_object('amount', v_amount, 'operation', p_operation, 'quantity', p_quantity,
                                   'job', p_job);
    v_answer := ledger.check_charge(v_account, p_key_space, p_key, 'debit', v_params, v_amount, p_job,
                                    v_budgets, v_now);
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    PERFORM ledger.expire_due(p_account, v_now);
    v_entry := ledger.append(p_account, 'debit', p_operation, -v_amount, v_now, p_quantity,
                             ledger.job(p_account, p_job, v_now), p_memo => p_memo);
    PERFORM ledger.draw(v_account, v_entry, v_amount);
    RETURN ledger.answer(p_account, p_key_space, p_key, 'debit', v_params, v_now, -v_amount, v_entry,
                         p_noticed => ledger.count_budgets(v_account, v_budgets, v_amount, 0, v_now));
END;
$$;


-- A staff correction, never an edit of an earlier entry: a positive amount grants a
-- never-expiring adjustment lot; a negative one consumes credits like a debit.
CREATE FUNCTION ledger.adjust(
    p_account bigint, p_key_space text, p_key text, p_amount bigint, p_memo text, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account;
    v_now timestamptz;
    v_params jsonb := jsonb_build_object('amount', p_amount, 'memo', p_memo);
    v_answer jsonb;
    v_entry bigint;
BEGIN
    IF p_amount IS NULL OR p_amount = 0 THEN
        RETURN ledger.refusal('invalid_posting', 'An adjustment must change the balance.');
    ELSIF p_amount > 0 THEN
        RETURN ledger.top_up(p_account, p_key_space, p_key, p_amount, 'adjustment',
                             'manual_adjustment', NULL, p_memo, p_now);
    END IF;
    v_account := ledger.lock_account(p_account);
    v_now := coalesce(p_now, clock_timestamp());
    v_answer := coalesce(ledger.replay(p_account, p_key_space, p_key, 'adjustment', v_params),
                         ledger.short_of(v_account, -p_amount, (SELECT available FROM ledger.credits(p_account, v_now))));
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    PERFORM ledger.expire_due(p_account, v_now);
    v_entry := ledger.append(p_account, 'adjustment', 'manual_adjustment', p_amount, v_now, p_memo => p_memo);
    PERFORM ledger.draw(v_account, v_entry, -p_amount);
    RETURN ledger.answer(p_account, p_key_space, p_key, 'adjustment', v_params, v_now, p_amount, v_entry);
END;
$$;


-- Put credits on hold for a job about to start: ``available`` drops, ``balance`` does
-- not. The hold is released by the periodic sweep if unresolved after ``ttl``.
CREATE FUNCTION ledger.reserve(
    p_account bigint, p_key_space text, p_key text, p_operation text, p_quantity bigint,
    p_amount bigint, p_job jsonb, p_ttl interval, p_api_key text, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account := ledger.lock_account(p_account);
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_cost jsonb := ledger.cost(p_operation, p_quantity, p_amount);
    v_budgets bigint[] := ledger.budgets_of(v_account, p_job, p_api_key);
    v_amount bigint;
    v_params jsonb;
    v_answer jsonb;
    v_hold bigint;
BEGIN
    IF v_cost ? 'error' THEN
        RETURN v_cost;
    END IF;
    v_amount := v_cost::bigint;
    v_params := jsonb_build_object('amount', v_amount, 'operation', p_operation, 'job', p_job);
    v_answer := ledger.check_charge(v_account, p_key_space, p_key, 'reserve', v_params, v_amount, p_job,
                                    v_budgets, v_now);
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    PERFORM ledger.expire_due(p_account, v_now);
    INSERT INTO ledger_hold (account_id, operation, amount, status, job_id, created_at, expires_at,
                             api_key, budgets)
    VALUES (p_account, p_operation, v_amount, 'pending', ledger.job(p_account, p_job, v_now), v_now,
            v_now + coalesce(p_ttl, interval '24 hours'), coalesce(p_api_key, ''), v_budgets)
    RETURNING id INTO v_hold;
    UPDATE ledger_account SET held = held + v_amount WHERE id = p_account;
    RETURN ledger.answer(p_account, p_key_space, p_key, 'reserve', v_params, v_now, p_hold => v_hold,
                         p_noticed => ledger.count_budgets(v_account, v_budgets, 0, v_amount, v_now));
END;
$$;


-- Charge a hold's job ``amount`` (or ``quantity`` of the hold's operation) and release the
-- rest. Up to the held amount this never fails: the held credits are the hold's. More
-- than was held is charged from available credits, or refused with the hold left pending.
CREATE FUNCTION ledger.settle(
    p_account bigint, p_key_space text, p_key text, p_hold bigint, p_amount bigint,
    p_quantity bigint, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account := ledger.lock_account(p_account);
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_hold ledger_hold;
    v_cost jsonb;
    v_amount bigint;
    v_params jsonb;
    v_answer jsonb;
    v_credits record;
    v_entry bigint;
BEGIN
    SELECT * INTO v_hold FROM ledger_hold WHERE id = p_hold AND account_id = p_account;
    IF v_hold.id IS NULL THEN
        RETURN ledger.not_pending(v_hold, p_hold);
    END IF;
    v_cost := ledger.cost(v_hold.operation, p_quantity, p_amount);
    IF v_cost ? 'error' THEN
        RETURN v_cost;
    END IF;
    v_amount := v_cost::bigint;
    v_params := jsonb_build_object('hold', p_hold, 'amount', v_amount);
    SELECT * INTO v_credits FROM ledger.credits(p_account, v_now);
    v_answer := coalesce(
        ledger.replay(p_account, p_key_space, p_key, 'settle', v_params),
        CASE WHEN v_amount < 0 THEN ledger.refusal('invalid_posting', 'A settle amount cannot be negative.') END,
        ledger.not_pending(v_hold, p_hold),
        -- This hold's own credits count as available to it; other holds' do not. So do
        -- they against the budgets it counts against: only a charge above them can exceed one.
        ledger.short_of(v_account, v_amount, v_credits.remaining - (v_credits.held - v_hold.amount)),
        CASE WHEN v_amount > v_hold.amount
             THEN ledger.over_budget(v_account, v_hold.budgets, v_amount, v_now, v_hold) END);
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    PERFORM ledger.expire_due(p_account, v_now);
    IF v_amount > 0 THEN
        v_entry := ledger.append(p_account, 'debit', v_hold.operation, -v_amount, v_now,
                                 p_job => v_hold.job_id, p_hold => v_hold.id);
        PERFORM ledger.draw(v_account, v_entry, v_amount);
    END IF;
    PERFORM ledger.resolve(v_hold, 'settled', v_now, v_amount);
    RETURN ledger.answer(p_account, p_key_space, p_key, 'settle', v_params, v_now, -v_amount, v_entry, v_hold.id,
                         p_noticed => ledger.count_budgets(v_account, v_hold.budgets, v_amount, -v_hold.amount,
                                                           v_now));
END;
$$;


-- Free a hold without charging anything.
CREATE FUNCTION ledger.release(
    p_account bigint, p_key_space text, p_key text, p_hold bigint, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account := ledger.lock_account(p_account);
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_hold ledger_hold;
    v_params jsonb := jsonb_build_object('hold', p_hold);
    v_answer jsonb;
BEGIN
    SELECT * INTO v_hold FROM ledger_hold WHERE id = p_hold AND account_id = p_account;
    IF v_hold.id IS NULL THEN
        RETURN ledger.not_pending(v_hold, p_hold);
    END IF;
    v_answer := coalesce(ledger.replay(p_account, p_key_space, p_key, 'release', v_params),
                         ledger.not_pending(v_hold, p_hold));
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    PERFORM ledger.resolve(v_hold, 'released', v_now);
    PERFORM ledger.count_budgets(v_account, v_hold.budgets, 0, -v_hold.amount, v_now);
    RETURN ledger.answer(p_account, p_key_space, p_key, 'release', v_params, v_now, p_hold => v_hold.id);
END;
$$;


-- Give back up to what a job consumed, as a positive entry linked to the job, to the lots
-- its credits came from: latest-expiring first (the reverse of the draw order). The share
-- of a lot past its expiry is forfeited, not revived. The share that no lot covered (an
-- unlimited account's overdraft) pays down the account's overdraft, or becomes a
-- never-expiring adjustment lot once that is paid, so no refunded credit is lost.
CREATE FUNCTION ledger.refund(
    p_account bigint, p_key_space text, p_key text, p_job text, p_amount bigint,
    p_operation text, p_api_key text, p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account := ledger.lock_account(p_account);
    v_now timestamptz := coalesce(p_now, clock_timestamp());
    v_params jsonb := jsonb_build_object('job', p_job, 'amount', p_amount, 'operation', p_operation);
    v_answer jsonb := ledger.replay(p_account, p_key_space, p_key, 'refund', v_params);
    v_job bigint;
    v_consumed bigint;        -- what the job's debits took
    v_refunded bigint;        -- what its refunds gave back, forfeited shares included
    v_refund_credits bigint;  -- what its refunds credited
    v_from_lots bigint;       -- what its debits took from lots
    v_to_lots bigint;         -- what its refunds put into lots
    v_uncovered bigint;       -- this refund's share that no lot covered
    v_left bigint;            -- what is still to give back; forfeited once the lots are done
    v_lots bigint[] := '{}';
    v_gives bigint[] := '{}';
    v_lot record;
    v_credited bigint;
    v_absorb bigint;          -- the account's overdraft, paid first
    v_paid bigint;
    v_cut bigint;
    v_entry bigint;
    v_surplus_lot bigint;
BEGIN
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    v_answer := ledger.not_positive(p_amount);
    IF v_answer IS NOT NULL THEN
        RETURN v_answer;
    END IF;
    SELECT id INTO v_job FROM ledger_job WHERE account_id = p_account AND external_id = p_job;
    IF NOT FOUND THEN
        RETURN ledger.refusal('invalid_posting', format('No job %L has consumed credits here.', p_job));
    END IF;
    SELECT coalesce(-sum(amount) FILTER (WHERE kind = 'debit'), 0),
           coalesce(sum(amount + refund_of_expired) FILTER (WHERE kind = 'refund'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0)
      INTO v_consumed, v_refunded, v_refund_credits
      FROM ledger_entry WHERE job_id = v_job;
    IF p_amount > v_consumed - v_refunded THEN
        RETURN ledger.refusal('invalid_posting', format('Job %L has %s credits left to refund; %s were asked.',
                                                       p_job, v_consumed - v_refunded, p_amount));
    END IF;
    SELECT coalesce(-sum(d.amount) FILTER (WHERE e.kind = 'debit'), 0),
           coalesce(sum(d.amount) FILTER (WHERE e.kind = 'refund'), 0)
      INTO v_from_lots, v_to_lots
      FROM ledger_lotdraw d JOIN ledger_entry e ON e.id = d.entry_id
     WHERE e.job_id = v_job;
    v_uncovered := least(p_amount, v_consumed - v_from_lots - (v_refund_credits - v_to_lots));
    v_left := p_amount - v_uncovered;

    -- Plan the returns: what the job still has taken from each lot, latest-expiring first.
    FOR v_lot IN
        SELECT l.id, -sum(d.amount) AS taken,
               l.expired OR coalesce(l.expires_at <= v_now, false) AS gone
          FROM ledger_lotdraw d
          JOIN ledger_entry e ON e.id = d.entry_id
          JOIN ledger_lot l ON l.id = d.lot_id
         WHERE e.job_id = v_job
         GROUP BY l.id
        HAVING -sum(d.amount) > 0
         ORDER BY l.expires_at DESC NULLS FIRST, l.created_at DESC, l.id DESC
    LOOP
        CONTINUE WHEN v_left = 0 OR v_lot.gone;
        v_lots := v_lots || v_lot.id;
        v_gives := v_gives || least(v_lot.taken, v_left);
        v_left := v_left - least(v_lot.taken, v_left);
    END LOOP;

    v_credited := p_amount - v_left;
    v_entry := ledger.append(p_account, 'refund', p_operation, v_credited, v_now, p_job => v_job,
                             p_refund_of_expired => v_left);
    -- An overdrawn (unlimited) account is paid down first: by the share no lot covered,
    -- then by what would have gone back to lots. Only the rest refills lots.
    v_absorb := least(greatest(-v_account.balance, 0), v_credited);
    v_paid := least(v_absorb, v_uncovered);
    v_absorb := v_absorb - v_paid;
    FOR i IN 1 .. cardinality(v_lots) LOOP
        v_cut := least(v_absorb, v_gives[i]);
        v_absorb := v_absorb - v_cut;
        CONTINUE WHEN v_gives[i] = v_cut;
        UPDATE ledger_lot SET remaining = remaining + v_gives[i] - v_cut WHERE id = v_lots[i];
        INSERT INTO ledger_lotdraw (entry_id, lot_id, amount) VALUES (v_entry, v_lots[i], v_gives[i] - v_cut);
    END LOOP;
    -- The uncovered share left over (its overdraft was since paid off) becomes a lot.
    IF v_uncovered > v_paid THEN
        INSERT INTO ledger_lot (account_id, source, amount, remaining, expires_at, expired, created_at)
        VALUES (p_account, 'adjustment', v_uncovered - v_paid, v_uncovered - v_paid, NULL, false, v_now)
        RETURNING id INTO v_surplus_lot;
        INSERT INTO ledger_lotdraw (entry_id, lot_id, amount) VALUES (v_entry, v_surplus_lot, v_uncovered - v_paid);
    END IF;
    -- What is given back is given back to the budgets of the job and of the refunding key.
    PERFORM ledger.count_budgets(v_account, ledger.budgets_of(v_account, jsonb_build_object('external_id', p_job),
                                                              p_api_key), -v_credited, 0, v_now);
    RETURN ledger.answer(p_account, p_key_space, p_key, 'refund', v_params, v_now, v_credited, v_entry,
                         p_forfeited => v_left);
END;
$$;


-- Expire what remains of the account's lots past their expiry (except what pending holds
-- stand on). Run by the month close and a periodic sweep. Answers the expiries (entry,
-- lot, amount) and the account's balance and held after them.
CREATE FUNCTION ledger.expire_lots(p_account bigint, p_now timestamptz)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_entries bigint[];
    v_account ledger_account;
BEGIN
    PERFORM ledger.lock_account(p_account);
    v_entries := ledger.expire_due(p_account, coalesce(p_now, clock_timestamp()));
    SELECT * INTO v_account FROM ledger_account WHERE id = p_account;
    RETURN jsonb_build_object(
        'expired', (SELECT coalesce(jsonb_agg(jsonb_build_object('entry_id', d.entry_id, 'lot_id', d.lot_id,
                                                                 'amount', d.amount) ORDER BY d.entry_id), '[]')
                      FROM ledger_lotdraw d WHERE d.entry_id = ANY(v_entries)),
        'balance', v_account.balance, 'held', v_account.held);
END;
$$;


-- Release a hold left pending past its expiry (the job runner never settled it); false
-- when it was resolved meanwhile.
CREATE FUNCTION ledger.expire_hold(p_hold bigint, p_now timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_hold ledger_hold;
    v_account ledger_account;
BEGIN
    SELECT * INTO v_hold FROM ledger_hold WHERE id = p_hold;
    v_account := ledger.lock_account(v_hold.account_id);
    SELECT * INTO v_hold FROM ledger_hold WHERE id = p_hold;  -- as it is under the lock
    IF v_hold.status <> 'pending' OR v_hold.expires_at > coalesce(p_now, clock_timestamp()) THEN
        RETURN false;
    END IF;
    PERFORM ledger.resolve(v_hold, 'expired', coalesce(p_now, clock_timestamp()));
    PERFORM ledger.count_budgets(v_account, v_hold.budgets, 0, -v_hold.amount, coalesce(p_now, clock_timestamp()));
    INSERT INTO ledger_notice (account_id, kind, detail, created_at)
    SELECT v_account.id, 'hold.expired',
           jsonb_build_object('hold_id', v_hold.id, 'amount', v_hold.amount, 'operation', v_hold.operation,
                              'job', (SELECT external_id FROM ledger_job WHERE id = v_hold.job_id),
                              'created_at', v_hold.created_at, 'expires_at', v_hold.expires_at),
           coalesce(p_now, clock_timestamp())
     WHERE v_account.notify;
    RETURN true;
END;
$$;
