//! Replays every checked-in corpus file through its target on the stable toolchain: what the
//! coverage-guided runs found interesting stays tested in `make ci`.

use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn every_corpus_input_runs_through_its_target_without_a_panic() {
    for (target, run) in cardsync_fuzz::TARGETS {
        let dir = corpus(target);
        let entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        assert!(
            entries.len() >= 3,
            "{target} has a corpus of {} inputs: seed it from the tests",
            entries.len()
        );
        for path in entries {
            let data = std::fs::read(&path).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
        }
    }
}

/// The `jwt` seeds signed with the fixed keys are accepted, so the target reaches the claims
/// checks and not only the refusals; the tampered ones are refused for what is wrong with them.
#[test]
fn the_signed_jwt_seeds_verify_and_the_tampered_ones_are_refused() {
    use cardsync_auth::AuthError;
    let verify = |name: &str| {
        let token =
            std::fs::read_to_string(corpus("jwt").join(format!("{name}.txt"))).expect("a jwt seed");
        cardsync_fuzz::RUNTIME.block_on(cardsync_fuzz::VERIFIERS[1].verify(&token))
    };
    for signed in ["hs256_admin", "es256_reader", "rs256_admin_v1"] {
        assert!(verify(signed).is_ok(), "{signed}: {:?}", verify(signed));
    }
    assert_eq!(verify("rs256_wrong_kid"), Err(AuthError::UnknownKey));
    assert_eq!(
        verify("es256_signed_by_rs_kid"),
        Err(AuthError::AlgorithmNotAccepted)
    );
    assert_eq!(
        verify("hs256_with_rs_kid_confusion"),
        Err(AuthError::BadSignature)
    );
    assert_eq!(verify("none_alg"), Err(AuthError::Malformed));
    assert_eq!(verify("expired"), Err(AuthError::Expired));
    assert_eq!(verify("no_role_no_tid"), Err(AuthError::NoRole));
    assert_eq!(verify("no_kid"), Err(AuthError::NoKeyId));
}

/// The well-formed `admin_body` seeds pass their route's checks and the bad ones are refused
/// with the problem the route answers, so the target reaches past the parsing.
#[test]
fn the_admin_body_seeds_reach_their_routes_checks() {
    let check = |name: &str| {
        let data = std::fs::read(corpus("admin_body").join(format!("{name}.bin")))
            .expect("an admin_body seed");
        let (selector, body) = data.split_first().expect("a selector byte");
        let route = admin_api::requests::Body::ALL
            [usize::from(*selector) % admin_api::requests::Body::ALL.len()];
        route
            .check(body)
            .map_err(|problem| (problem.status, problem.kind))
    };
    for fine in [
        "tenant_create",
        "tenant_patch",
        "connection_put",
        "scope_put",
        "rules_put",
        "schedule_put",
        "schedule_put_monthly",
        "schedule_patch_pause",
        "sync_tenant_group",
        "sync_tenant_empty",
        "sync_user_depth",
        "subscription_register",
        "subscription_recreate",
        "field_edit",
        "field_edit_clear",
    ] {
        assert_eq!(check(fine), Ok(()), "{fine}");
    }
    let refused = |name: &str, status: u16, code: &str| {
        assert_eq!(
            check(name),
            Err((status, format!("urn:cardsync:problem:{code}"))),
            "{name}"
        );
    };
    refused("tenant_create_bad_rules", 422, "invalid-rules");
    refused("tenant_create_unknown_field", 422, "invalid-body");
    refused("connection_put_blank", 422, "invalid-client-id");
    refused("scope_put_bad", 422, "invalid-group-id");
    refused("schedule_put_bad_time", 422, "invalid-schedule");
    refused("schedule_patch", 422, "invalid-schedule");
    refused("sync_user_bad_depth", 422, "invalid-body");
    refused("subscription_register_bad", 422, "invalid-expires-at");
    refused("field_edit_nul", 422, "invalid-value");
    refused("not_json", 400, "malformed-body");
}
