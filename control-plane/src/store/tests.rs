//! The store suite. Every implementation must pass it; `suite` takes a factory that
//! opens the same store again (a restart).

use super::*;

fn write(kind: Kind, name: &str, body: &[u8]) -> Write {
    Write {
        kind,
        name: name.to_owned(),
        body: body.to_vec(),
    }
}

async fn suite<S: Store>(open: impl Fn() -> S) {
    let store = open();
    let mut revision = store.revision();
    assert_eq!(*revision.borrow_and_update(), 0);

    // Create two in one transaction: one revision, both stamped with it.
    let results = store
        .apply(vec![
            write(Kind::Service, "shop/orders", b"a"),
            write(Kind::Endpoints, "shop/orders", b"b"),
        ])
        .await
        .expect("apply");
    assert_eq!(results, vec![(Outcome::Created, 1), (Outcome::Created, 1)]);
    assert!(revision.has_changed().expect("watch alive"));
    assert_eq!(*revision.borrow_and_update(), 1);

    // Identical again: unchanged, no new revision.
    let results = store
        .apply(vec![write(Kind::Service, "shop/orders", b"a")])
        .await
        .expect("apply");
    assert_eq!(results, vec![(Outcome::Unchanged, 1)]);
    assert!(!revision.has_changed().expect("watch alive"));

    let results = store
        .apply(vec![
            write(Kind::Service, "shop/orders", b"a2"),
            write(Kind::Service, "shop/users", b"u"),
        ])
        .await
        .expect("apply");
    assert_eq!(results, vec![(Outcome::Updated, 2), (Outcome::Created, 2)]);

    let services = store.list(Kind::Service).await.expect("list");
    let names: Vec<_> = services.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shop/orders", "shop/users"]);
    assert_eq!(store.list(Kind::Endpoints).await.expect("list").len(), 1);

    let got = store
        .get(Kind::Service, "shop/orders")
        .await
        .expect("get")
        .expect("present");
    assert_eq!((got.version, got.body.as_slice()), (2, b"a2".as_slice()));

    assert_eq!(
        store
            .delete(Kind::Service, "shop/users")
            .await
            .expect("delete"),
        Some(3)
    );
    assert_eq!(
        store
            .delete(Kind::Service, "shop/users")
            .await
            .expect("delete"),
        None
    );

    assert_eq!(
        store
            .register("pod-1", b"w".to_vec())
            .await
            .expect("register"),
        4
    );
    assert_eq!(
        store
            .register("pod-1", b"w".to_vec())
            .await
            .expect("register"),
        4
    );
    assert_eq!(
        store
            .register("pod-2", b"x".to_vec())
            .await
            .expect("register"),
        5
    );
    assert_eq!(
        store.deregister("pod-2").await.expect("deregister"),
        Some(6)
    );
    assert_eq!(store.deregister("pod-2").await.expect("deregister"), None);

    let contents = store.contents().await.expect("contents");
    assert_eq!(contents.revision, 6);
    assert_eq!(contents.records.len(), 2);
    assert_eq!(contents.registrations.len(), 1);
    drop(store);

    // A restart loses nothing, and versions keep increasing.
    let store = open();
    assert_eq!(*store.revision().borrow(), 6);
    let contents = store.contents().await.expect("contents");
    assert_eq!(contents.records.len(), 2);
    assert_eq!(contents.registrations[0].node_id, "pod-1");
    let results = store
        .apply(vec![write(Kind::Service, "shop/orders", b"a3")])
        .await
        .expect("apply");
    assert_eq!(results, vec![(Outcome::Updated, 7)]);

    // Secrets: first writer wins in create, put replaces, a prefix lists in key order,
    // and none of it moves the revision (no proxy is pushed anything).
    let mut revision = store.revision();
    revision.borrow_and_update();
    assert_eq!(store.get_secret("ca").await.expect("get"), None);
    let kept = store
        .create_secret("ca", b"first".to_vec())
        .await
        .expect("create");
    assert_eq!(kept, b"first");
    let kept = store
        .create_secret("ca", b"second".to_vec())
        .await
        .expect("create");
    assert_eq!(kept, b"first");
    store
        .put_secret("token/b", b"2".to_vec())
        .await
        .expect("put");
    store
        .put_secret("token/a", b"1".to_vec())
        .await
        .expect("put");
    store
        .put_secret("token/a", b"1b".to_vec())
        .await
        .expect("put");
    store
        .put_secret("tokens", b"x".to_vec())
        .await
        .expect("put");
    let tokens = store.list_secrets("token/").await.expect("list");
    assert_eq!(
        tokens,
        vec![
            ("token/a".to_owned(), b"1b".to_vec()),
            ("token/b".to_owned(), b"2".to_vec())
        ]
    );
    assert!(!revision.has_changed().expect("watch alive"));
    drop(store);
    let store = open();
    assert_eq!(
        store.get_secret("ca").await.expect("get"),
        Some(b"first".to_vec())
    );
}

#[tokio::test]
async fn embedded_store_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    suite(|| EmbeddedStore::open(&path).expect("open")).await;
}

#[tokio::test]
async fn embedded_store_reports_an_unusable_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let err = EmbeddedStore::open(&file).err().expect("must fail");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
