-- The steps every posting shares: lock, replay, price, check, find the job, append an
-- entry (with the day's rollup), draw from lots, expire what is due, answer and record.
--
-- Each posting function in postings.sql is a short sequence of these: lock the account,
-- check, write, record. They live in the schema "ledger" and read the tables Django made
-- (ledger_account, ledger_entry, ...).
--
-- A posting the rules refuse is answered, not raised: every check comes before the first
-- write, so a refused posting has written nothing, and a batch needs no savepoint per
-- posting. A refusal is {"error": {"code", "message", "detail"}}, with the codes
-- ledger/postings.py turns into the ledger's exceptions: insufficient_credits,
-- idempotency_conflict, unknown_operation, invalid_posting, hold_not_found,
-- hold_not_pending, budget_exceeded.

CREATE SCHEMA IF NOT EXISTS ledger;


CREATE FUNCTION ledger.refusal(p_code text, p_message text, p_detail jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN jsonb_build_object('error', jsonb_build_object('code', p_code, 'message', p_message,
                                                          'detail', p_detail));
END;
$$;


-- Lock the account for a read-check-write. FOR NO KEY UPDATE is the lock an UPDATE that
-- keeps the key takes: it excludes every other posting and the month close (FOR UPDATE),
-- but not the foreign-key checks of rows that merely reference the account.
CREATE FUNCTION ledger.lock_account(p_account bigint)
RETURNS ledger_account LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account;
BEGIN
    SELECT * INTO v_account FROM ledger_account WHERE id = p_account FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no account %', p_account;  -- a caller's mistake, not a refusal
    END IF;
    RETURN v_account;
END;
$$;


-- What was answered the first time ``key`` was posted (NULL if never): a retry with the
-- same parameters gets that answer again; other parameters are refused as a conflict
-- naming the fields that differ ("action" first when the key was used for another kind of posting).
-- Clients' keys and Tally's own live in separate key spaces, so they can never meet.
CREATE FUNCTION ledger.replay(
    p_account bigint, p_key_space text, p_key text, p_action text, p_params jsonb
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_first ledger_idempotencyrecord;
    v_fields text[];
BEGIN
    IF p_key IS NULL OR length(p_key) NOT BETWEEN 1 AND 255 THEN
        RETURN ledger.refusal('invalid_posting', 'An idempotency key of 1 to 255 characters is required.');
    END IF;
    SELECT * INTO v_first FROM ledger_idempotencyrecord
     WHERE account_id = p_account AND key_space = p_key_space AND "key" = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(array_agg(name ORDER BY name COLLATE "C"), '{}') INTO v_fields
      FROM (SELECT jsonb_object_keys(p_params) UNION SELECT jsonb_object_keys(v_first.params)) AS k(name)
     WHERE p_params -> name IS DISTINCT FROM v_first.params -> name;
    IF v_first.action <> p_action THEN
        v_fields := array_prepend('action', v_fields);
    END IF;
    IF cardinality(v_fields) > 0 THEN
        RETURN ledger.refusal('idempotency_conflict',
            format('Idempotency key %L was used with different %s.', p_key, array_to_string(v_fields, ', ')),
            jsonb_build_object('key', p_key, 'fields', v_fields));
    END IF;
    RETURN jsonb_build_object('receipt', v_first.result, 'replayed', true);
END;
$$;


-- Credits for ``quantity`` units of ``operation`` from the price table: the unit price
-- times the quantity, never less than the operation's minimum. NULL for an operation
-- without a price.
CREATE FUNCTION ledger.price(p_operation text, p_quantity bigint)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT greatest(credits_per_unit * p_quantity, minimum_credits)
              FROM ledger_price WHERE operation = p_operation);
END;
$$;


-- What a posting costs: ``amount`` when given, else ``quantity`` of ``operation`` priced
-- (a quantity of 0 costs nothing). The credits as a JSON number, or a refusal.
CREATE FUNCTION ledger.cost(p_operation text, p_quantity bigint, p_amount bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_price bigint;
BEGIN
    IF p_amount IS NOT NULL THEN
        RETURN to_jsonb(p_amount);
    ELSIF p_quantity IS NULL OR p_quantity < 0 THEN
        RETURN ledger.refusal('invalid_posting', 'Quantity must be a positive whole number.');
    ELSIF p_quantity = 0 THEN
        RETURN to_jsonb(0);
    END IF;
    v_price := ledger.price(p_operation, p_quantity);
    IF v_price IS NULL THEN
        RETURN ledger.refusal('unknown_operation', format('No price is defined for operation %L.', p_operation),
                              jsonb_build_object('operation', p_operation));
    END IF;
    RETURN to_jsonb(v_price);
END;
$$;


-- A refusal of an amount that is not a positive number of credits; NULL for one that is.
CREATE FUNCTION ledger.not_positive(p_amount bigint)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RETURN ledger.refusal('invalid_posting', 'Amounts are positive whole numbers of credits.');
    END IF;
    RETURN NULL;
END;
$$;


-- A refusal of a job that is not an object with a non-empty external_id; NULL for a job
-- that is one, and for no job.
CREATE FUNCTION ledger.bad_job(p_job jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_job IS NOT NULL AND jsonb_typeof(p_job) <> 'null'
       AND (jsonb_typeof(p_job) <> 'object' OR coalesce(p_job ->> 'external_id', '') = '') THEN
        RETURN ledger.refusal('invalid_posting', 'A job is an object with a non-empty external_id.');
    END IF;
    RETURN NULL;
END;
$$;


-- The job a posting is for, made on first sight; its first description stays. NULL for
-- a posting without a job.
CREATE FUNCTION ledger.job(p_account bigint, p_job jsonb, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_job bigint;
BEGIN
    IF p_job IS NULL OR jsonb_typeof(p_job) = 'null' THEN
        RETURN NULL;
    END IF;
    SELECT id INTO v_job FROM ledger_job
     WHERE account_id = p_account AND external_id = p_job ->> 'external_id';
    IF NOT FOUND THEN
        INSERT INTO ledger_job (account_id, external_id, name, project, "user", resource_class, created_at)
        VALUES (p_account, p_job ->> 'external_id', coalesce(p_job ->> 'name', ''),
                coalesce(p_job ->> 'project', ''), coalesce(p_job ->> 'user', ''),
                coalesce(p_job ->> 'resource_class', ''), p_now)
        RETURNING id INTO v_job;
    END IF;
    RETURN v_job;
END;
$$;


-- A refusal of a posting that needs ``required`` credits when only ``available`` are
-- there; NULL when they cover it. An unlimited account is never refused.
CREATE FUNCTION ledger.short_of(p_account ledger_account, p_required bigint, p_available bigint)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT p_account.unlimited AND p_available < p_required THEN
        RETURN ledger.refusal('insufficient_credits',
            format('This needs %s credits; %s are available.', p_required, greatest(p_available, 0)),
            jsonb_build_object('required', p_required, 'remaining', greatest(p_available, 0),
                               'slug', p_account.slug));
    END IF;
    RETURN NULL;
END;
$$;


-- Whether a charge (a debit or a hold) of ``amount`` for ``job`` may go ahead: the answer
-- to its key if it was posted before, else a refusal (a charge of nothing, a malformed
-- job, too few credits available once what is past its expiry is left out, a budget it
-- would take past its limit); NULL when it may go ahead.
CREATE FUNCTION ledger.check_charge(
    p_account ledger_account, p_key_space text, p_key text, p_action text, p_params jsonb,
    p_amount bigint, p_job jsonb, p_budgets bigint[], p_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN coalesce(ledger.replay(p_account.id, p_key_space, p_key, p_action, p_params),
                    ledger.not_positive(p_amount), ledger.bad_job(p_job),
                    ledger.short_of(p_account, p_amount, (SELECT available FROM ledger.credits(p_account.id, p_now))),
                    ledger.over_budget(p_account, p_budgets, p_amount, p_now));
END;
$$;


-- The month a posting at ``now`` counts in: that of the day its entry is dated on (in the
-- account's time zone, never before the first open day).
CREATE FUNCTION ledger.month_of(p_account ledger_account, p_now timestamptz)
RETURNS date LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN date_trunc('month', greatest((p_now AT TIME ZONE p_account.time_zone)::date,
                                        p_account.open_from))::date;
END;
$$;


-- The budgets a charge for ``job`` posted with the API key named ``api_key`` counts
-- against: those of the job's project and user (as the job was first described, if it
-- was) and of the key. None unless the account has budgets.
CREATE FUNCTION ledger.budgets_of(p_account ledger_account, p_job jsonb, p_api_key text)
RETURNS bigint[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_project text;
    v_user text;
BEGIN
    IF NOT p_account.budgeted THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(p_job) = 'object' THEN
        SELECT project, "user" INTO v_project, v_user FROM ledger_job
         WHERE account_id = p_account.id AND external_id = p_job ->> 'external_id';
        IF NOT FOUND THEN
            v_project := p_job ->> 'project';
            v_user := p_job ->> 'user';
        END IF;
    END IF;
    RETURN (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM ledger_budget
             WHERE account_id = p_account.id
               AND ((scope = 'project' AND name = v_project) OR (scope = 'user' AND name = v_user)
                    OR (scope = 'api_key' AND name = p_api_key)));
END;
$$;


-- A refusal of a charge of ``amount`` that would take one of ``budgets`` past its limit
-- this month: what the month used plus what pending holds keep (less ``hold``'s own
-- credits, when a settle charges more than its hold) plus ``amount``. NULL when every
-- budget covers it.
CREATE FUNCTION ledger.over_budget(
    p_account ledger_account, p_budgets bigint[], p_amount bigint, p_now timestamptz,
    p_hold ledger_hold DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_month date;
    v_budget record;
    v_left bigint;
BEGIN
    IF cardinality(p_budgets) = 0 THEN
        RETURN NULL;
    END IF;
    v_month := ledger.month_of(p_account, p_now);
    SELECT b.scope, b.name, b.monthly_limit, coalesce(m.used, 0) AS used,
           b.held - coalesce(p_hold.amount, 0) AS held
      INTO v_budget
      FROM ledger_budget b
      LEFT JOIN ledger_budgetmonth m ON m.budget_id = b.id AND m.month = v_month
     WHERE b.id = ANY(p_budgets)
       AND coalesce(m.used, 0)::numeric + b.held - coalesce(p_hold.amount, 0) + p_amount > b.monthly_limit
     ORDER BY b.scope, b.name
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_left := greatest(v_budget.monthly_limit - v_budget.used - v_budget.held, 0);
    RETURN ledger.refusal('budget_exceeded',
        format('This needs %s credits; the %s budget %L has %s of its %s left this month.',
               p_amount, replace(v_budget.scope, '_', ' '), v_budget.name, v_left, v_budget.monthly_limit),
        jsonb_build_object('required', p_amount, 'slug', p_account.slug,
                           'budget', jsonb_build_object('scope', v_budget.scope, 'name', v_budget.name,
                                                        'monthly_limit', v_budget.monthly_limit,
                                                        'used', v_budget.used, 'held', v_budget.held,
                                                        'remaining', v_left)));
END;
$$;


-- The alert level (0, 50, 80 or 100% of ``monthly_limit``) that ``taken`` credits reach.
CREATE FUNCTION ledger.budget_level(p_taken bigint, p_monthly_limit bigint)
RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE WHEN p_monthly_limit <= 0 THEN 0
                WHEN p_taken::numeric * 100 >= p_monthly_limit::numeric * 100 THEN 100
                WHEN p_taken::numeric * 100 >= p_monthly_limit::numeric * 80 THEN 80
                WHEN p_taken::numeric * 100 >= p_monthly_limit::numeric * 50 THEN 50
                ELSE 0 END;
END;
$$;


-- Count a posting against ``budgets``: ``used`` credits charged (negative: refunded,
-- never below 0) in the month of ``now``, and ``held`` credits kept by holds. A budget
-- whose used and held credits cross 50, 80 or 100% of its limit is noticed (budget
-- alerts read the notice). Returns whether one was.
CREATE FUNCTION ledger.count_budgets(
    p_account ledger_account, p_budgets bigint[], p_used bigint, p_held bigint, p_now timestamptz
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_month date;
    v_crossed bigint[];
BEGIN
    IF cardinality(p_budgets) = 0 OR (p_used = 0 AND p_held = 0) THEN
        RETURN false;
    END IF;
    v_month := ledger.month_of(p_account, p_now);
    IF p_held <> 0 THEN
        UPDATE ledger_budget SET held = held + p_held WHERE id = ANY(p_budgets);
    END IF;
    IF p_used <> 0 THEN
        INSERT INTO ledger_budgetmonth AS m (budget_id, month, used)
        SELECT id, v_month, greatest(p_used, 0) FROM ledger_budget WHERE id = ANY(p_budgets)
        ON CONFLICT (budget_id, month) DO UPDATE SET used = greatest(m.used + p_used, 0);
    END IF;
    IF p_used + p_held <= 0 THEN
        RETURN false;
    END IF;
    SELECT array_agg(b.id) INTO v_crossed
      FROM ledger_budget b
      LEFT JOIN ledger_budgetmonth m ON m.budget_id = b.id AND m.month = v_month
     WHERE b.id = ANY(p_budgets)
       AND ledger.budget_level(coalesce(m.used, 0) + b.held, b.monthly_limit)
           > ledger.budget_level(coalesce(m.used, 0) + b.held - p_used - p_held, b.monthly_limit);
    IF v_crossed IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO ledger_notice (account_id, kind, detail, created_at)
    SELECT p_account.id, 'budget', jsonb_build_object('budget', id, 'month', v_month), p_now
      FROM unnest(v_crossed) AS id;
    RETURN true;
END;
$$;


-- Add one entry to the day it falls on: the daily rollup that usage pages and statements
-- read instead of the entries. Its parts are positive figures: top-ups by their lot's
-- source; debits, refunds, expired credits and negative adjustments (DESIGN.md, "One
-- meaning for every number"); and the day's closing balance.
CREATE FUNCTION ledger.add_to_day(
    p_account bigint, p_day date, p_kind text, p_source text, p_amount bigint, p_balance bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_top_up text := CASE WHEN p_kind = 'top_up' THEN p_source
                          WHEN p_kind = 'adjustment' AND p_amount > 0 THEN 'adjustment' END;
BEGIN
    INSERT INTO ledger_dailyrollup AS r (
        account_id, date, top_ups_subscription, top_ups_purchase, top_ups_promotional,
        top_ups_adjustment, debits, refunds, expired, adjustments, balance)
    VALUES (p_account, p_day,
            CASE WHEN v_top_up = 'subscription' THEN p_amount ELSE 0 END,
            CASE WHEN v_top_up = 'purchase' THEN p_amount ELSE 0 END,
            CASE WHEN v_top_up = 'promotional' THEN p_amount ELSE 0 END,
            CASE WHEN v_top_up = 'adjustment' THEN p_amount ELSE 0 END,
            CASE WHEN p_kind = 'debit' THEN -p_amount ELSE 0 END,
            CASE WHEN p_kind = 'refund' THEN p_amount ELSE 0 END,
            CASE WHEN p_kind = 'expiry' THEN -p_amount ELSE 0 END,
            CASE WHEN p_kind = 'adjustment' AND p_amount < 0 THEN -p_amount ELSE 0 END,
            p_balance)
    ON CONFLICT (account_id, date) DO UPDATE SET
        top_ups_subscription = r.top_ups_subscription + excluded.top_ups_subscription,
        top_ups_purchase = r.top_ups_purchase + excluded.top_ups_purchase,
        top_ups_promotional = r.top_ups_promotional + excluded.top_ups_promotional,
        top_ups_adjustment = r.top_ups_adjustment + excluded.top_ups_adjustment,
        debits = r.debits + excluded.debits,
        refunds = r.refunds + excluded.refunds,
        expired = r.expired + excluded.expired,
        adjustments = r.adjustments + excluded.adjustments,
        balance = excluded.balance;
END;
$$;


-- Add a debit or a refund to its day's group: the job's project, user and resource class
-- (the price table's class for a debit without a job, or a job that did not say) and the
-- operation. Reports by any of these read this, not the entries.
CREATE FUNCTION ledger.add_to_groups(
    p_account bigint, p_day date, p_kind text, p_operation text, p_job bigint, p_amount bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_groupday AS g (account_id, date, project, "user", resource_class, operation, debits, refunds)
    SELECT p_account, p_day, coalesce(j.project, ''), coalesce(j."user", ''),
           coalesce(nullif(j.resource_class, ''),
                    (SELECT resource_class FROM ledger_price WHERE operation = p_operation), ''),
           coalesce(p_operation, ''),
           CASE WHEN p_kind = 'debit' THEN -p_amount ELSE 0 END,
           CASE WHEN p_kind = 'refund' THEN p_amount ELSE 0 END
      FROM (SELECT p_job AS id) AS posting LEFT JOIN ledger_job j ON j.id = posting.id
    ON CONFLICT (account_id, date, project, "user", resource_class, operation) DO UPDATE SET
        debits = g.debits + excluded.debits,
        refunds = g.refunds + excluded.refunds;
END;
$$;


-- Append one entry and move the balance by its signed amount: the entry records the
-- balance after it, and the day's rollup follows. An entry is dated on its day in the
-- account's time zone, but never into a month already closed (usage reported late lands
-- in the open month, and a closed statement never changes). A debit or a refund also
-- counts in its day's group. ``source`` is a top-up's lot source. Returns the entry's id.
CREATE FUNCTION ledger.append(
    p_account bigint, p_kind text, p_operation text, p_amount bigint, p_now timestamptz,
    p_quantity bigint DEFAULT NULL, p_job bigint DEFAULT NULL, p_hold bigint DEFAULT NULL,
    p_refund_of_expired bigint DEFAULT 0, p_memo text DEFAULT '', p_source text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_day date;
    v_entry bigint;
BEGIN
    UPDATE ledger_account SET balance = balance + p_amount WHERE id = p_account
    RETURNING balance, greatest((p_now AT TIME ZONE time_zone)::date, open_from) INTO v_balance, v_day;
    INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, quantity, job_id,
                              hold_id, refund_of_expired, memo, created_at, local_date)
    VALUES (p_account, p_kind, p_operation, p_amount, v_balance, p_quantity, p_job, p_hold,
            p_refund_of_expired, p_memo, p_now, v_day)
    RETURNING id INTO v_entry;
    PERFORM ledger.add_to_day(p_account, v_day, p_kind, p_source, p_amount, v_balance);
    IF p_kind IN ('debit', 'refund') THEN
        PERFORM ledger.add_to_groups(p_account, v_day, p_kind, p_operation, p_job, p_amount);
    END IF;
    RETURN v_entry;
END;
$$;


-- Take ``amount`` credits for ``entry`` from the account's live lots in draw order:
-- soonest expiry first, never-expiring last, oldest first among equals. Each lot drawn
-- on records what was taken from it, so a refund or an expiry is exact. Only an
-- unlimited account may need more than its lots hold (an overdraft); a limited account
-- was checked before.
CREATE FUNCTION ledger.draw(p_account ledger_account, p_entry bigint, p_amount bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_lot record;
    v_take bigint;
    v_needed bigint := p_amount;
BEGIN
    FOR v_lot IN
        SELECT id, remaining FROM ledger_lot WHERE account_id = p_account.id AND live
         ORDER BY expires_at ASC NULLS LAST, created_at, id
    LOOP
        EXIT WHEN v_needed = 0;
        v_take := least(v_lot.remaining, v_needed);
        UPDATE ledger_lot SET remaining = remaining - v_take WHERE id = v_lot.id;
        INSERT INTO ledger_lotdraw (entry_id, lot_id, amount) VALUES (p_entry, v_lot.id, -v_take);
        v_needed := v_needed - v_take;
    END LOOP;
    IF v_needed > 0 AND NOT p_account.unlimited THEN
        RAISE EXCEPTION 'lots do not cover a checked debit on account %', p_account.id;
    END IF;
END;
$$;


-- What expires of the lots past their expiry at ``now``: each such lot, what remains in
-- it, and what it keeps. All of it expires except the credits pending holds stand on: a
-- hold is a promise. Lots not yet due cover the holds first; what they cannot cover stays
-- in the due lots a settle would draw first (soonest expiry first), and expires once the
-- holds resolve.
CREATE FUNCTION ledger.expiring(p_account bigint, p_now timestamptz)
RETURNS TABLE (lot_id bigint, source text, remaining bigint, keep bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_promised bigint;
BEGIN
    SELECT greatest(a.held - coalesce(sum(l.remaining), 0), 0)::bigint INTO v_promised
      FROM ledger_account a
      LEFT JOIN ledger_lot l
        ON l.account_id = a.id AND l.live AND (l.expires_at IS NULL OR l.expires_at > p_now)
     WHERE a.id = p_account
     GROUP BY a.held;
    RETURN QUERY
        SELECT due.id, due.source, due.remaining, least(due.remaining, greatest(v_promised - due.before, 0))::bigint
          FROM (SELECT l.id, l.source::text, l.remaining,
                       coalesce(sum(l.remaining) OVER (ORDER BY l.expires_at, l.created_at, l.id
                                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                                0) AS before
                  FROM ledger_lot l
                 WHERE l.account_id = p_account AND l.live AND l.expires_at <= p_now) AS due
         ORDER BY due.before;
END;
$$;


-- Expire what ``expiring`` says, one ``expiry`` entry per lot. Returns the entries' ids.
CREATE FUNCTION ledger.expire_due(p_account bigint, p_now timestamptz)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_lot record;
    v_entry bigint;
    v_entries bigint[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT FROM ledger_lot WHERE account_id = p_account AND live AND expires_at <= p_now) THEN
        RETURN v_entries;  -- the common case, answered from the live-lots index
    END IF;
    FOR v_lot IN SELECT * FROM ledger.expiring(p_account, p_now) WHERE keep < remaining LOOP
        v_entry := ledger.append(p_account, 'expiry', 'expiry', v_lot.keep - v_lot.remaining, p_now,
                                 p_memo => format('%s lot %s expired', v_lot.source, v_lot.lot_id));
        UPDATE ledger_lot SET remaining = v_lot.keep, expired = (v_lot.keep = 0) WHERE id = v_lot.lot_id;
        INSERT INTO ledger_lotdraw (entry_id, lot_id, amount)
        VALUES (v_entry, v_lot.lot_id, v_lot.keep - v_lot.remaining);
        v_entries := v_entries || v_entry;
    END LOOP;
    RETURN v_entries;
END;
$$;


-- The account's credits at ``now`` as the posting would see them once it has expired what
-- is due: what remains, what is held, and what is available. Reads only: pages and the
-- API show this, so a lot past its expiry never counts, even before the sweep expires it.
CREATE FUNCTION ledger.credits(p_account bigint, p_now timestamptz)
RETURNS TABLE (remaining bigint, held bigint, available bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_account ledger_account;
    v_gone bigint := 0;
BEGIN
    SELECT * INTO v_account FROM ledger_account WHERE id = p_account;
    IF EXISTS (SELECT FROM ledger_lot WHERE account_id = p_account AND live AND expires_at <= p_now) THEN
        SELECT coalesce(sum(x.remaining - x.keep), 0)::bigint INTO v_gone FROM ledger.expiring(p_account, p_now) AS x;
    END IF;
    RETURN QUERY SELECT v_account.balance - v_gone, v_account.held,
                        greatest(v_account.balance - v_gone - v_account.held, 0);
END;
$$;


-- Resolve a pending hold once (settled, released or expired): its credits are no longer
-- held, and lots past their expiry that it stood on expire now. (Its budgets are the
-- caller's to count: a settle moves them from held to used.)
CREATE FUNCTION ledger.resolve(
    p_hold ledger_hold, p_status text, p_now timestamptz, p_settled bigint DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_hold SET status = p_status, resolved_at = p_now, settled_amount = p_settled
     WHERE id = p_hold.id;
    UPDATE ledger_account SET held = held - p_hold.amount WHERE id = p_hold.account_id;
    PERFORM ledger.expire_due(p_hold.account_id, p_now);
END;
$$;


-- A refusal to resolve hold ``hold_id`` (``hold``, as read; NULL if the account has no
-- such hold): there is none, or it was resolved already. NULL for a pending hold.
CREATE FUNCTION ledger.not_pending(p_hold ledger_hold, p_hold_id bigint)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_hold.id IS NULL THEN
        RETURN ledger.refusal('hold_not_found', format('No hold %s on this account.', p_hold_id),
                              jsonb_build_object('hold_id', p_hold_id));
    ELSIF p_hold.status <> 'pending' THEN
        RETURN ledger.refusal('hold_not_pending', format('Hold %s is already %s.', p_hold.id, p_hold.status),
                              jsonb_build_object('hold_id', p_hold.id, 'status', p_hold.status));
    END IF;
    RETURN NULL;
END;
$$;


-- Record the answer against the key (in the same transaction as the posting, so a
-- refused posting stores nothing, not even its key) and return it: the receipt, with the
-- account's figures after the posting, and whether listeners want to hear of it (the
-- account is watched, or the posting ``noticed`` something). A watched account's receipt
-- is also kept as a notice, so listeners see every posting in order.
CREATE FUNCTION ledger.answer(
    p_account bigint, p_key_space text, p_key text, p_action text, p_params jsonb,
    p_now timestamptz, p_amount bigint DEFAULT 0, p_entry bigint DEFAULT NULL,
    p_hold bigint DEFAULT NULL, p_forfeited bigint DEFAULT 0, p_noticed boolean DEFAULT false
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account ledger_account;
    v_receipt jsonb;
BEGIN
    SELECT * INTO v_account FROM ledger_account WHERE id = p_account;
    v_receipt := jsonb_build_object(
        'action', p_action, 'amount', p_amount, 'balance', v_account.balance,
        'held', v_account.held, 'available', greatest(v_account.balance - v_account.held, 0),
        'created_at', p_now, 'entry_id', p_entry, 'hold_id', p_hold, 'forfeited', p_forfeited);
    INSERT INTO ledger_idempotencyrecord (account_id, key_space, "key", action, params, result, created_at)
    VALUES (p_account, p_key_space, p_key, p_action, p_params, v_receipt, p_now);
    IF v_account.notify THEN
        INSERT INTO ledger_notice (account_id, kind, detail, created_at)
        VALUES (p_account, 'posting', v_receipt, p_now);
    END IF;
    RETURN jsonb_build_object('receipt', v_receipt, 'replayed', false,
                              'notify', v_account.notify OR p_noticed);
END;
$$;
