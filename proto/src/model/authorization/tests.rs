use super::*;

fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).expect("id")
}

fn policy(name: &str, allow: &[&str], default_action: &str) -> AuthorizationPolicy {
    AuthorizationPolicy::try_from(&v1::AuthorizationPolicy {
        namespace: "shop".into(),
        name: name.into(),
        service: "orders".into(),
        port: 0,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        default_action: default_action.into(),
    })
    .expect("valid policy")
}

#[test]
fn patterns_match_exactly_their_scope() {
    let orders = id("spiffe://cluster.local/ns/shop/sa/orders");
    let users = id("spiffe://cluster.local/ns/shop/sa/users");
    let billing = id("spiffe://cluster.local/ns/billing/sa/orders");
    let foreign = id("spiffe://other.example/ns/shop/sa/orders");
    let cases = [
        (
            "spiffe://cluster.local/ns/shop/sa/orders",
            [true, false, false, false],
        ),
        (
            "spiffe://cluster.local/ns/shop/*",
            [true, true, false, false],
        ),
        ("spiffe://cluster.local/*", [true, true, true, false]),
        ("spiffe://other.example/*", [false, false, false, true]),
    ];
    for (text, expected) in cases {
        let pattern = IdentityPattern::parse(text).expect("pattern");
        assert_eq!(pattern.to_string(), text);
        let got = [&orders, &users, &billing, &foreign].map(|id| pattern.matches(id));
        assert_eq!(got, expected, "{text}");
    }
}

#[test]
fn malformed_patterns_are_refused() {
    for text in [
        "",
        "*",
        "cluster.local/ns/shop/*",
        "spiffe://cluster.local",
        "spiffe://cluster.local/",
        "spiffe://Cluster.Local/*",
        "spiffe://*/ns/shop/*",
        "spiffe://cluster.local/ns/shop*",
        "spiffe://cluster.local/ns/*/sa/orders",
        "spiffe://cluster.local/ns/shop/sa/*",
        "spiffe://cluster.local/ns/shop/sa/ord*",
        "spiffe://cluster.local/ns/Shop/*",
        "spiffe://cluster.local/ns/shop/sa/orders/extra",
    ] {
        assert!(
            IdentityPattern::parse(text).is_err(),
            "{text:?} was accepted"
        );
    }
}

#[test]
fn conversion_names_the_bad_field() {
    let base = v1::AuthorizationPolicy {
        namespace: "shop".into(),
        name: "orders-callers".into(),
        service: "shop/orders".into(),
        port: 80,
        allow: vec!["spiffe://cluster.local/ns/shop/*".into()],
        default_action: String::new(),
    };
    let valid = AuthorizationPolicy::try_from(&base).expect("valid");
    assert_eq!(valid.port, Some(80));
    assert_eq!(valid.default_action, DefaultAction::Deny);
    assert_eq!(valid.to_proto().default_action, "deny");
    let field = |message: v1::AuthorizationPolicy| {
        AuthorizationPolicy::try_from(&message)
            .expect_err("invalid")
            .field
    };
    let bad_allow = v1::AuthorizationPolicy {
        allow: vec![
            "spiffe://cluster.local/*".into(),
            "spiffe://cluster.local/ns/sh*".into(),
        ],
        ..base.clone()
    };
    assert_eq!(field(bad_allow), "allow[1]");
    let bad_port = v1::AuthorizationPolicy {
        port: 70000,
        ..base.clone()
    };
    assert_eq!(field(bad_port), "port");
    let no_service = v1::AuthorizationPolicy {
        service: String::new(),
        ..base.clone()
    };
    assert_eq!(field(no_service), "service");
    let bad_action = v1::AuthorizationPolicy {
        default_action: "audit".into(),
        ..base.clone()
    };
    assert_eq!(field(bad_action), "default_action");
    let bare = v1::AuthorizationPolicy {
        service: "orders".into(),
        ..base
    };
    let bare = AuthorizationPolicy::try_from(&bare).expect("valid");
    assert_eq!(bare.service.to_string(), "shop/orders");
}

#[test]
fn a_listed_caller_passes_and_deny_wins_the_default() {
    let orders = id("spiffe://cluster.local/ns/shop/sa/orders");
    let stranger = id("spiffe://cluster.local/ns/elsewhere/sa/stranger");
    let strict = policy("a-strict", &["spiffe://cluster.local/ns/shop/*"], "deny");
    let audit = policy("b-audit", &[], "allow");

    assert_eq!(
        decide::<&AuthorizationPolicy, _>([], Some(&orders)),
        Decision::Open
    );
    assert_eq!(decide([&strict], Some(&orders)), Decision::Allowed(&strict));
    assert_eq!(
        decide([&strict], Some(&stranger)),
        Decision::Denied(&strict)
    );
    assert_eq!(decide([&strict], None), Decision::Denied(&strict));
    // A default-allow policy does not open a service another policy closes.
    assert_eq!(
        decide([&strict, &audit], Some(&stranger)),
        Decision::Denied(&strict)
    );
    // Listed by one policy is enough, whatever the others' defaults.
    assert_eq!(
        decide([&audit, &strict], Some(&orders)),
        Decision::Allowed(&strict)
    );
    // Only default-allow policies: everyone passes, plaintext too.
    assert_eq!(decide([&audit], None), Decision::Allowed(&audit));
}
