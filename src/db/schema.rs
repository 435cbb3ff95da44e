// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (id) {
        id -> Text,
        email -> Nullable<Text>,
        stripe_customer_id -> Nullable<Text>,
        status -> Text,
        status_reason -> Nullable<Text>,
        balance -> Int8,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        token_hash -> Text,
        role -> Text,
        label -> Nullable<Text>,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    balance_transactions (id) {
        id -> Text,
        source -> Text,
        reporting_category -> Nullable<Text>,
        amount -> Int8,
        fee -> Int8,
        net -> Int8,
        currency -> Text,
        created -> Timestamp,
        fetched_at -> Timestamp,
    }
}

diesel::table! {
    consumption_draws (generation_id, lot_id) {
        generation_id -> Text,
        lot_id -> Int8,
        credits -> Int8,
    }
}

diesel::table! {
    consumptions (generation_id) {
        generation_id -> Text,
        account_id -> Text,
        credits -> Int8,
        status -> Text,
        balance_after -> Int8,
        failure_reason -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    credit_lots (id) {
        id -> Int8,
        account_id -> Text,
        purchase_id -> Nullable<Text>,
        granted -> Int8,
        remaining -> Int8,
        created_at -> Timestamp,
    }
}

diesel::table! {
    decisions (id) {
        id -> Int8,
        subject_type -> Text,
        subject_id -> Text,
        rule -> Text,
        action -> Text,
        explanation -> Text,
        reference -> Text,
        decided_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    deferred_event_refs (stripe_id, event_id) {
        stripe_id -> Text,
        event_id -> Text,
    }
}

diesel::table! {
    disputes (id) {
        id -> Text,
        purchase_id -> Text,
        account_id -> Nullable<Text>,
        charge_id -> Nullable<Text>,
        reason -> Text,
        amount -> Int8,
        currency -> Text,
        status -> Text,
        outcome -> Nullable<Text>,
        credits_revoked -> Int8,
        credits_reinstated -> Int8,
        funds_withdrawn -> Int8,
        fees_withdrawn -> Int8,
        funds_reinstated -> Int8,
        fees_reinstated -> Int8,
        opened_at -> Timestamp,
        closed_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    jobs (id) {
        id -> Int8,
        kind -> Text,
        payload -> Text,
        idempotency_key -> Text,
        status -> Text,
        attempts -> Int8,
        run_after -> Timestamp,
        locked_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        trace_context -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> Int8,
        account_id -> Text,
        lot_id -> Int8,
        purchase_id -> Nullable<Text>,
        kind -> Text,
        delta -> Int8,
        balance_after -> Int8,
        reference -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    purchases (id) {
        id -> Text,
        payment_intent_id -> Text,
        charge_id -> Nullable<Text>,
        checkout_session_id -> Nullable<Text>,
        account_id -> Nullable<Text>,
        account_reference -> Nullable<Text>,
        stripe_customer_id -> Nullable<Text>,
        package_id -> Nullable<Text>,
        amount -> Int8,
        currency -> Text,
        status -> Text,
        credits_granted -> Int8,
        undelivered_reason -> Nullable<Text>,
        paid_at -> Timestamp,
        source_event_id -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    refunds (id) {
        id -> Text,
        purchase_id -> Text,
        amount -> Int8,
        currency -> Text,
        reason -> Text,
        rule -> Text,
        origin -> Text,
        status -> Text,
        status_detail -> Nullable<Text>,
        stripe_refund_id -> Nullable<Text>,
        credits_revoked -> Int8,
        credits_shortfall -> Int8,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    refund_request_notes (id) {
        id -> Int8,
        request_id -> Text,
        kind -> Text,
        author -> Text,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    refund_requests (id) {
        id -> Text,
        account_id -> Text,
        kind -> Text,
        purchase_id -> Nullable<Text>,
        generation_id -> Nullable<Text>,
        category -> Nullable<Text>,
        feedback -> Text,
        original_image_url -> Nullable<Text>,
        result_image_url -> Nullable<Text>,
        status -> Text,
        rule -> Text,
        explanation -> Text,
        refund_id -> Nullable<Text>,
        credits_returned -> Int8,
        due_at -> Nullable<Timestamp>,
        filed_by -> Text,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    replay_cursors (name) {
        name -> Text,
        position -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    stripe_charges (charge_id) {
        charge_id -> Text,
        payment_intent_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> Text,
        event_type -> Text,
        api_version -> Nullable<Text>,
        livemode -> Bool,
        stripe_created -> Timestamp,
        payload -> Text,
        status -> Text,
        detail -> Nullable<Text>,
        attempts -> Int8,
        last_error -> Nullable<Text>,
        received_at -> Timestamp,
        processed_at -> Nullable<Timestamp>,
        source -> Text,
    }
}

diesel::joinable!(consumption_draws -> consumptions (generation_id));
diesel::joinable!(consumption_draws -> credit_lots (lot_id));
diesel::joinable!(consumptions -> accounts (account_id));
diesel::joinable!(credit_lots -> accounts (account_id));
diesel::joinable!(credit_lots -> purchases (purchase_id));
diesel::joinable!(deferred_event_refs -> webhook_events (event_id));
diesel::joinable!(disputes -> accounts (account_id));
diesel::joinable!(disputes -> purchases (purchase_id));
diesel::joinable!(ledger_entries -> accounts (account_id));
diesel::joinable!(ledger_entries -> credit_lots (lot_id));
diesel::joinable!(purchases -> accounts (account_id));
diesel::joinable!(refund_request_notes -> refund_requests (request_id));
diesel::joinable!(refund_requests -> accounts (account_id));
diesel::joinable!(refund_requests -> purchases (purchase_id));
diesel::joinable!(refund_requests -> refunds (refund_id));
diesel::joinable!(refunds -> purchases (purchase_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    api_tokens,
    balance_transactions,
    consumption_draws,
    consumptions,
    credit_lots,
    decisions,
    deferred_event_refs,
    disputes,
    jobs,
    ledger_entries,
    purchases,
    refund_request_notes,
    refund_requests,
    refunds,
    replay_cursors,
    stripe_charges,
    webhook_events,
);
