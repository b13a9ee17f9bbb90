//! `map-fullname`'s mapping, run natively: the example transform's own
//! code (its crate is in the plugins workspace, which CI does not test
//! natively, so its tests live here). What the plugin does in the sandbox
//! is tested through the real binary in invoke.rs and demo.rs.

use causeway_sdk::{Op, Record};
use map_fullname::{Contact, Subscriber, map_batch, map_contact};

fn contact<'a>(first: &'a str, last: &'a str, email: Option<&'a str>) -> Contact<'a> {
    Contact {
        first_name: first.into(),
        last_name: last.into(),
        email: email.map(Into::into),
        company: None,
    }
}

fn upsert(key: &str, data: &str) -> Record {
    Record {
        stream: "contacts".into(),
        key: key.into(),
        op: Op::Upsert,
        data: data.into(),
        source_timestamp: Some(7),
    }
}

#[test]
fn joins_first_and_last_name() {
    let c = contact("Ada", "Lovelace", Some("ada@example.com"));
    let s = map_contact(&c).expect("a contact with an email maps");
    assert_eq!(s.full_name, "Ada Lovelace");
    assert_eq!(s.email, "ada@example.com");
}

#[test]
fn drops_contacts_without_email() {
    assert!(map_contact(&contact("No", "Mail", None)).is_none());
    assert!(map_contact(&contact("No", "Mail", Some("  "))).is_none());
}

#[test]
fn a_missing_name_part_leaves_no_stray_space() {
    let c = contact("", "Hopper", Some("g@example.com"));
    let s = map_contact(&c).expect("a contact with an email maps");
    assert_eq!(s.full_name, "Hopper");
}

#[test]
fn escaped_and_null_fields_map_like_plain_ones() {
    let data = r#"{"firstName":"Ada \"the Countess\"","lastName":"Lovelace","email":" ada@example.com ","company":null}"#;
    let out = map_batch(vec![upsert("c1", data)], "subscribers").expect("maps");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].stream, "subscribers");
    assert_eq!(out[0].key, "c1");
    assert_eq!(out[0].source_timestamp, Some(7));
    assert_eq!(
        out[0].data,
        r#"{"fullName":"Ada \"the Countess\" Lovelace","email":"ada@example.com"}"#
    );
}

#[test]
fn deletes_pass_through_and_bad_data_names_its_record() {
    let delete = Record {
        op: Op::Delete,
        data: String::new(),
        ..upsert("gone", "")
    };
    let out = map_batch(vec![delete], "list").expect("a delete maps");
    assert_eq!(
        (out[0].stream.as_str(), out[0].key.as_str()),
        ("list", "gone")
    );
    assert_eq!(out[0].op, Op::Delete);

    let err = map_batch(vec![upsert("c9", "not json")], "list").expect_err("not a contact");
    assert!(err.to_string().contains("c9"), "{err}");
}

/// The subscriber's hand-written JSON is byte for byte serde_json's, for
/// every ASCII byte at every offset within and across the writer's 8-byte
/// steps, with and without an organization, and for text beyond ASCII.
#[test]
fn subscribers_are_written_as_serde_json_writes_them() {
    let check = |full_name: String, email: &str, organization: Option<&str>| {
        let subscriber = Subscriber {
            full_name,
            email,
            organization,
        };
        let expected = serde_json::to_string(&subscriber).expect("serde_json writes it");
        assert_eq!(subscriber.to_json(), expected, "{subscriber:?}");
        let mut bytes = b"prefix".to_vec();
        subscriber.write_json(&mut bytes);
        assert_eq!(bytes, [b"prefix", expected.as_bytes()].concat());
    };
    for byte in 0u8..=0x7f {
        let c = char::from(byte);
        for len in 0..20 {
            for at in 0..=len {
                let mut text: String = "abcdefghijklmnopqrst"[..len].into();
                text.insert(at, c);
                check(text.clone(), &text, None);
                check("Ada".into(), "a@example.com", Some(&text));
            }
        }
        // Two escapes in one step, and one at each end of a long run.
        let text = format!("{c}0123456{c}{c}89abcdef{c}");
        check(text.clone(), &text, Some(&text));
    }
    for text in [
        "",
        "Zoë Ångström",
        "日本語の名前",
        "🦀\u{2028}\u{7f}\u{80}\u{ffff}",
        "\"\\\u{0}",
    ] {
        check(text.into(), text, Some(text));
    }
}
