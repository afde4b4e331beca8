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

    registrations(&store).await;
    let contents = store.contents().await.expect("contents");
    assert_eq!(contents.revision, 7);
    assert_eq!(contents.records.len(), 2);
    assert_eq!(contents.registrations.len(), 1);
    drop(store);

    // A restart loses nothing, and versions keep increasing.
    let store = open();
    assert_eq!(*store.revision().borrow(), 7);
    let contents = store.contents().await.expect("contents");
    assert_eq!(contents.records.len(), 2);
    let pod = &contents.registrations[0];
    assert_eq!(
        (pod.node_id.as_str(), pod.version, pod.generation),
        ("pod-1", 5, 6)
    );
    // Generations go on from where they were, above every stored one.
    let claimed = store.register("pod-1", b"w2".to_vec()).await;
    assert_eq!(claimed.expect("claim"), 8);
    let results = store
        .apply(vec![write(Kind::Service, "shop/orders", b"a3")])
        .await
        .expect("apply");
    assert_eq!(results, vec![(Outcome::Updated, 8)]);

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

/// Registrations, from revision 3: a claim always takes a new generation, and writes and
/// removals conditional on a generation do nothing once it moved on.
async fn registrations<S: Store>(store: &S) {
    let registration = |contents: Contents, node: &str| {
        let found = contents
            .registrations
            .into_iter()
            .find(|r| r.node_id == node);
        found.map(|r| (r.version, r.generation, r.workload))
    };
    let mut revision = store.revision();
    assert_eq!(
        store.register("pod-1", b"w".to_vec()).await.expect("claim"),
        4
    );
    assert_eq!(*revision.borrow_and_update(), 4);
    // Claimed again with the same bytes (a reconnect): a new generation, and neither
    // the version that views are built from nor the revision moves.
    assert_eq!(
        store.register("pod-1", b"w".to_vec()).await.expect("claim"),
        5
    );
    assert!(!revision.has_changed().expect("watch alive"));
    let contents = store.contents().await.expect("contents");
    assert_eq!(contents.revision, 4);
    assert_eq!(registration(contents, "pod-1"), Some((4, 5, b"w".to_vec())));

    let stale = store.reregister("pod-1", b"w2".to_vec(), 4);
    assert_eq!(stale.await.expect("reregister"), None);
    assert!(
        !revision.has_changed().expect("watch alive"),
        "a refused write moves nothing"
    );
    let held = store.reregister("pod-1", b"w2".to_vec(), 5);
    assert_eq!(held.await.expect("reregister"), Some(6));
    let contents = store.contents().await.expect("contents");
    assert_eq!(contents.revision, 5);
    assert_eq!(
        registration(contents, "pod-1"),
        Some((5, 6, b"w2".to_vec()))
    );

    assert_eq!(
        store.register("pod-2", b"x".to_vec()).await.expect("claim"),
        7
    );
    assert_eq!(
        store.deregister("pod-2", 6).await.expect("deregister"),
        None
    );
    assert!(registration(store.contents().await.expect("contents"), "pod-2").is_some());
    assert_eq!(
        store.deregister("pod-2", 7).await.expect("deregister"),
        Some(7)
    );
    assert_eq!(
        store.deregister("pod-2", 7).await.expect("deregister"),
        None
    );
    // A removed registration is not brought back by the claim it was removed under.
    let gone = store.reregister("pod-2", b"x".to_vec(), 7);
    assert_eq!(gone.await.expect("reregister"), None);
    assert_eq!(
        registration(store.contents().await.expect("contents"), "pod-2"),
        None
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

/// A store written before registrations had generations: each reads with its version
/// as generation, so the expiry of a leftover after the upgrade can still remove it.
#[tokio::test]
async fn embedded_store_reads_registrations_without_a_generation() {
    use redb::TableDefinition;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = redb::Database::create(dir.path().join("weft.redb")).expect("create");
        let txn = db.begin_write().expect("begin");
        {
            let registrations = TableDefinition::<&str, &[u8]>::new("registrations");
            let mut table = txn.open_table(registrations).expect("table");
            let value = [7u64.to_le_bytes().as_slice(), b"w"].concat();
            table.insert("pod-1", value.as_slice()).expect("insert");
            let mut meta = txn
                .open_table(TableDefinition::<&str, u64>::new("meta"))
                .expect("table");
            meta.insert("revision", 7).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let contents = store.contents().await.expect("contents");
    let pod = &contents.registrations[0];
    assert_eq!((pod.version, pod.generation), (7, 7));
    assert_eq!(
        store.deregister("pod-1", 7).await.expect("deregister"),
        Some(8)
    );
}
