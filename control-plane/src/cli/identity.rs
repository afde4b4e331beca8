//! How `weftctl token list` and `weftctl ca ...` print: tables of public facts only
//! (token ids, never secrets; root fingerprints, never keys).

use weft_proto::v1;

use super::status::age;
use super::table::Table;

pub fn tokens_table(tokens: &[v1::Token], now: i64) -> Table {
    let mut table = Table::new(["ID", "NAMESPACE", "SERVICE ACCOUNT", "STATE", "EXPIRES IN"]);
    for token in tokens {
        let state = if token.revoked {
            "revoked"
        } else if now >= token.expires_at {
            "expired"
        } else {
            "valid"
        };
        let expires = if now >= token.expires_at {
            "-".to_owned()
        } else {
            age(now, token.expires_at)
        };
        table.row([
            token.id.clone(),
            token.namespace.clone(),
            token.service_account.clone(),
            state.to_owned(),
            expires,
        ]);
    }
    table
}

pub fn ca_table(status: &v1::CaStatus, now: i64) -> Table {
    let mut table = Table::new(["FINGERPRINT (SHA-256)", "SIGNING", "EXPIRES IN", "SUBJECT"]);
    for root in &status.roots {
        table.row([
            root.fingerprint.clone(),
            if root.signing { "yes" } else { "no" }.to_owned(),
            age(now, root.not_after),
            root.subject.clone(),
        ]);
    }
    let source = if status.external {
        "operator-supplied CA (--ca-cert)"
    } else {
        "generated CA"
    };
    let phase = if status.roots.len() > 1 {
        "; rotation under way: run `weftctl ca finish-rotation` once every proxy has renewed"
    } else {
        ""
    };
    table.note(format!(
        "trust domain {}, {source}{phase}",
        status.trust_domain
    ));
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_show_their_state() {
        let token = |id: &str, expires_at: i64, revoked: bool| v1::Token {
            id: id.into(),
            namespace: "shop".into(),
            service_account: "orders".into(),
            created_at: 0,
            expires_at,
            revoked,
        };
        let text = tokens_table(
            &[
                token("a", 4_600, false),
                token("b", 50, false),
                token("c", 4_600, true),
            ],
            1_000,
        )
        .render();
        let states: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(states, ["valid", "expired", "revoked"]);
        assert!(text.contains("1h0m"), "{text}");
    }

    #[test]
    fn a_rotation_in_progress_says_what_to_do_next() {
        let root = |fingerprint: &str, signing| v1::CaRoot {
            fingerprint: fingerprint.into(),
            subject: "CN=weft root".into(),
            not_after: 10_000,
            signing,
        };
        let status = v1::CaStatus {
            trust_domain: "cluster.local".into(),
            roots: vec![root("aa", false), root("bb", true)],
            external: false,
        };
        let text = ca_table(&status, 0).render();
        assert!(text.contains("finish-rotation"), "{text}");
    }
}
