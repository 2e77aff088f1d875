//! The task store's behaviour, one suite run against both backends: SQLite (a file in a
//! temporary data directory) and a real PostgreSQL (a throwaway cluster from the system's
//! packages; see `support/postgres.rs`). Every scenario is a function of a [`Db`], and
//! `on_both_backends!` makes a `sqlite::` and a `postgres::` test of each.

#[path = "support/postgres.rs"]
mod postgres_cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;
use warden_server::tasks::model::{
    AgentKind, TaskDefaults, TaskSubmission, TimeoutValue, Timestamp, TokenUsage,
};
use warden_server::tasks::store::{CancelOutcome, Inserted, TaskQuery, TaskStoreError};
use warden_server::tasks::store_sql::{SqlTaskStore, open_task_store};
use warden_server::tasks::{Task, TaskStatus, TaskStore};

use postgres_cluster::PgCluster;

/// A database a scenario opens stores on, as many handles as it likes.
enum Db {
    /// SQLite: the data directory holding `tasks.db`.
    Sqlite(tempfile::TempDir),
    /// A database of its own in the shared test cluster.
    Postgres {
        cluster: Arc<PgCluster>,
        url: String,
        data: tempfile::TempDir,
    },
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().expect("a data directory"))
    }

    async fn postgres(test: &str) -> Db {
        let cluster = postgres_cluster::cluster();
        let url = cluster.database(test).await;
        Db::Postgres {
            cluster,
            url,
            data: tempfile::tempdir().expect("a data directory"),
        }
    }

    /// A new handle (its own pool) on the database; runs the migrations like a replica
    /// starting.
    async fn open(&self) -> SqlTaskStore {
        let opened = match self {
            Db::Sqlite(data) => SqlTaskStore::open(None, data.path()).await,
            Db::Postgres { url, data, .. } => SqlTaskStore::open(Some(url), data.path()).await,
        };
        opened.expect("open the task store")
    }
}

const REPO_A: &str = "https://example.com/org/a.git";
const REPO_B: &str = "https://example.com/org/b.git";

fn task(id: &str, repo: &str, created: i64) -> Task {
    let spec = TaskSubmission {
        repo: repo.into(),
        task: format!("work on {id}"),
        ..TaskSubmission::default()
    }
    .validate(id, &TaskDefaults::default())
    .expect("a valid submission");
    Task::new(id.into(), spec, Timestamp(created))
}

fn with_key(mut task: Task, key: &str) -> Task {
    task.spec.idempotency_key = Some(key.into());
    task
}

/// A task with every optional field set, to check that nothing is lost on the way.
fn full_task(id: &str) -> Task {
    let mut env = BTreeMap::new();
    env.insert("RUST_LOG".into(), "debug".into());
    let spec = TaskSubmission {
        repo: REPO_B.into(),
        task: "rewrite the parser\nwith \"quotes\" and ünïcode".into(),
        base_branch: Some("main".into()),
        new_branch: Some("feature/parser".into()),
        agent: Some("claude-code".into()),
        model: Some("anthropic:claude-sonnet".into()),
        template: Some("rust".into()),
        timeout: Some(TimeoutValue::Text("1h".into())),
        env,
        idempotency_key: Some("full-1".into()),
    }
    .validate(id, &TaskDefaults::default())
    .expect("a valid submission");
    assert_eq!(spec.agent, AgentKind::ClaudeCode);
    let mut t = Task::new(id.into(), spec, Timestamp(1_700_000_000_123));
    t.updated_at = Timestamp(1_700_000_000_456);
    t.started_at = Some(Timestamp(1_700_000_000_200));
    t.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
    t.summary = Some("done".into());
    t.usage = TokenUsage {
        input_tokens: 1200,
        output_tokens: 340,
    };
    t.cost_usd = Some(0.125);
    t.sandbox = Some("sbx-1".into());
    t
}

async fn list(store: &dyn TaskStore, query: TaskQuery) -> Vec<String> {
    let page = store.list(&query).await.expect("list");
    page.tasks.into_iter().map(|t| t.id).collect()
}

/// Every page of `query`, followed by its cursors.
async fn all_pages(store: &dyn TaskStore, mut query: TaskQuery) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = store.list(&query).await.expect("list a page");
        pages.push(page.tasks.iter().map(|t| t.id.clone()).collect());
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return pages,
        }
        assert!(pages.len() < 100, "the pages do not end");
    }
}

async fn insert_get_and_idempotency(db: &Db) {
    let store = db.open().await;
    let first = with_key(task("task-first", REPO_A, 1_000), "key-1");
    assert_eq!(
        store.insert(&first).await.unwrap(),
        Inserted::Created(first.clone())
    );
    assert_eq!(store.get("task-first").await.unwrap(), Some(first.clone()));

    // The same key again: the first task, unchanged, and no second one.
    let retry = with_key(task("task-retry", REPO_B, 2_000), "key-1");
    assert_eq!(
        store.insert(&retry).await.unwrap(),
        Inserted::Existing(first.clone())
    );
    assert_eq!(store.get("task-retry").await.unwrap(), None);

    // Tasks without a key never collide with one another.
    for id in ["task-nokey-1", "task-nokey-2"] {
        let t = task(id, REPO_A, 3_000);
        assert_eq!(store.insert(&t).await.unwrap(), Inserted::Created(t));
    }
    // The same id twice is an error, not a silent success.
    let again = task("task-nokey-1", REPO_A, 4_000);
    assert!(matches!(
        store.insert(&again).await,
        Err(TaskStoreError::Sql(_))
    ));

    // Every field survives the round trip.
    let full = full_task("task-full");
    assert_eq!(
        store.insert(&full).await.unwrap(),
        Inserted::Created(full.clone())
    );
    assert_eq!(store.get("task-full").await.unwrap(), Some(full));

    assert_eq!(store.get("task-missing").await.unwrap(), None);
    assert_eq!(
        store.count_by_status().await.unwrap(),
        [(TaskStatus::Queued, 4)]
    );
}

async fn list_filters_and_pages(db: &Db) {
    let store = db.open().await;
    // Two tasks share a creation time: the larger id comes first.
    for (id, repo, created) in [
        ("task-1", REPO_A, 1_000),
        ("task-2", REPO_B, 2_000),
        ("task-3a", REPO_A, 3_000),
        ("task-3b", REPO_B, 3_000),
        ("task-4", REPO_A, 4_000),
        ("task-5", REPO_A, 5_000),
        ("task-6", REPO_B, 6_000),
    ] {
        store.insert(&task(id, repo, created)).await.unwrap();
    }
    // task-1 runs (claimed first: the oldest), task-2 is canceled.
    let claimed = store
        .claim_next("r1", Timestamp(7_000), Timestamp(60_000))
        .await
        .unwrap();
    assert_eq!(claimed.map(|t| t.id).as_deref(), Some("task-1"));
    store
        .cancel("task-2", Timestamp(7_000), "not needed")
        .await
        .unwrap();

    let all = [
        "task-6", "task-5", "task-4", "task-3b", "task-3a", "task-2", "task-1",
    ];
    assert_eq!(list(&store, TaskQuery::default()).await, all);

    let by_status = |status: Vec<TaskStatus>| TaskQuery {
        status,
        ..TaskQuery::default()
    };
    assert_eq!(
        list(&store, by_status(vec![TaskStatus::Running])).await,
        ["task-1"]
    );
    assert_eq!(
        list(
            &store,
            by_status(vec![TaskStatus::Canceled, TaskStatus::Running])
        )
        .await,
        ["task-2", "task-1"]
    );
    assert_eq!(
        list(&store, by_status(vec![TaskStatus::Failed])).await,
        Vec::<String>::new()
    );
    let repo_a = TaskQuery {
        repo: Some(REPO_A.into()),
        ..TaskQuery::default()
    };
    assert_eq!(
        list(&store, repo_a.clone()).await,
        ["task-5", "task-4", "task-3a", "task-1"]
    );
    // The repository is matched exactly.
    let prefix = TaskQuery {
        repo: Some("https://example.com/org".into()),
        ..TaskQuery::default()
    };
    assert_eq!(list(&store, prefix).await, Vec::<String>::new());
    // `since` includes its own instant.
    let since = TaskQuery {
        since: Some(Timestamp(3_000)),
        ..TaskQuery::default()
    };
    assert_eq!(
        list(&store, since).await,
        ["task-6", "task-5", "task-4", "task-3b", "task-3a"]
    );
    let combined = TaskQuery {
        status: vec![TaskStatus::Queued],
        repo: Some(REPO_A.into()),
        since: Some(Timestamp(3_500)),
        ..TaskQuery::default()
    };
    assert_eq!(list(&store, combined).await, ["task-5", "task-4"]);

    // Pages of two, across the tie at 3000; the last page has no cursor.
    let pages = all_pages(
        &store,
        TaskQuery {
            limit: 2,
            ..TaskQuery::default()
        },
    )
    .await;
    assert_eq!(
        pages,
        [
            vec!["task-6", "task-5"],
            vec!["task-4", "task-3b"],
            vec!["task-3a", "task-2"],
            vec!["task-1"],
        ]
    );
    // A page that ends exactly at the last task has no cursor either.
    let pages = all_pages(&store, TaskQuery { limit: 2, ..repo_a }).await;
    assert_eq!(pages, [vec!["task-5", "task-4"], vec!["task-3a", "task-1"]]);
    // Pages with a limit of one follow the tie too.
    let pages = all_pages(
        &store,
        TaskQuery {
            limit: 1,
            since: Some(Timestamp(3_000)),
            status: vec![TaskStatus::Queued],
            ..TaskQuery::default()
        },
    )
    .await;
    assert_eq!(
        pages.concat(),
        ["task-6", "task-5", "task-4", "task-3b", "task-3a"]
    );

    // A task created after the first page was read does not shift the next ones.
    let first = store
        .list(&TaskQuery {
            limit: 3,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    store.insert(&task("task-7", REPO_A, 8_000)).await.unwrap();
    let second = store
        .list(&TaskQuery {
            limit: 3,
            cursor: first.next_cursor.clone(),
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = second.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["task-3b", "task-3a", "task-2"]);

    // The limit is clamped to 1..=500.
    let zero = TaskQuery {
        limit: 0,
        ..TaskQuery::default()
    };
    assert_eq!(list(&store, zero).await, ["task-7"]);
    let huge = TaskQuery {
        limit: 100_000,
        ..TaskQuery::default()
    };
    assert_eq!(list(&store, huge).await.len(), 8);

    // An unknown cursor gives an empty page.
    for cursor in ["garbage", "", "12", "x:task-1"] {
        let page = store
            .list(&TaskQuery {
                cursor: Some(cursor.into()),
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert!(
            page.tasks.is_empty() && page.next_cursor.is_none(),
            "{cursor:?}"
        );
    }
}

async fn claim_oldest_first(db: &Db) {
    let store = db.open().await;
    assert_eq!(
        store
            .claim_next("r1", Timestamp(1), Timestamp(2))
            .await
            .unwrap(),
        None
    );
    for (id, created) in [
        ("task-c", 3_000),
        ("task-a", 1_000),
        ("task-b", 2_000),
        ("task-0", 2_000),
    ] {
        store.insert(&task(id, REPO_A, created)).await.unwrap();
    }
    // A canceled task is never claimed.
    store
        .cancel("task-a", Timestamp(5_000), "changed my mind")
        .await
        .unwrap();

    let mut order = Vec::new();
    for n in 0..3 {
        let now = Timestamp(10_000 + n);
        let lease = Timestamp(70_000 + n);
        let t = store
            .claim_next("replica-1", now, lease)
            .await
            .unwrap()
            .expect("a queued task");
        assert_eq!(t.status, TaskStatus::Running);
        assert_eq!(t.owner.as_deref(), Some("replica-1"));
        assert_eq!(t.started_at, Some(now));
        assert_eq!(t.updated_at, now);
        assert_eq!(t.attempts, 1);
        assert!(!t.cancel_requested);
        assert_eq!(store.get(&t.id).await.unwrap(), Some(t.clone()));
        order.push(t.id);
    }
    // The oldest first; the tie at 2000 by id.
    assert_eq!(order, ["task-0", "task-b", "task-c"]);
    assert_eq!(
        store
            .claim_next("replica-1", Timestamp(20_000), Timestamp(80_000))
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_claims_take_each_task_once(db: &Db) {
    const TASKS: usize = 40;
    const CLAIMERS: usize = 8;
    let stores = [Arc::new(db.open().await), Arc::new(db.open().await)];
    for n in 0..TASKS {
        let t = task(&format!("task-{n:03}"), REPO_A, 1_000 + (n as i64 % 7));
        stores[n % 2].insert(&t).await.unwrap();
    }
    let mut claimers = Vec::new();
    for c in 0..CLAIMERS {
        let store = Arc::clone(&stores[c % 2]);
        claimers.push(tokio::spawn(async move {
            let owner = format!("replica-{c}");
            let mut claimed = Vec::new();
            while let Some(t) = store
                .claim_next(&owner, Timestamp(5_000), Timestamp(65_000))
                .await
                .expect("claim")
            {
                assert_eq!(t.owner.as_deref(), Some(owner.as_str()));
                claimed.push(t.id);
                tokio::task::yield_now().await;
            }
            claimed
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("a claimer"));
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), TASKS, "claimed: {all:?}");
    assert_eq!(unique.len(), TASKS, "a task was claimed twice: {all:?}");
    for id in &all {
        let t = stores[0].get(id).await.unwrap().unwrap();
        assert_eq!((t.status, t.attempts), (TaskStatus::Running, 1), "{id}");
    }
    assert_eq!(
        stores[1].count_by_status().await.unwrap(),
        [(TaskStatus::Running, TASKS as u64)]
    );
}

async fn update_owned_follows_the_owner(db: &Db) {
    let store = db.open().await;
    store.insert(&task("task-u", REPO_A, 1_000)).await.unwrap();
    let mut t = store
        .claim_next("r1", Timestamp(2_000), Timestamp(10_000))
        .await
        .unwrap()
        .unwrap();

    // The owner writes its progress and renews the lease.
    t.status = TaskStatus::WaitingApproval;
    t.sandbox = Some("sbx-9".into());
    t.usage.input_tokens = 99;
    t.updated_at = Timestamp(3_000);
    assert_eq!(
        store.update_owned(&t, Timestamp(30_000)).await.unwrap(),
        Some(false)
    );
    assert_eq!(store.get("task-u").await.unwrap(), Some(t.clone()));
    // The renewed lease holds past the first one.
    assert_eq!(
        store
            .fail_abandoned(Timestamp(20_000), None, "lease")
            .await
            .unwrap(),
        []
    );

    // Anyone else is refused, and nothing changes.
    let mut other = t.clone();
    other.owner = Some("r2".into());
    other.summary = Some("stolen".into());
    assert_eq!(
        store.update_owned(&other, Timestamp(90_000)).await.unwrap(),
        None
    );
    other.owner = None;
    assert_eq!(
        store.update_owned(&other, Timestamp(90_000)).await.unwrap(),
        None
    );
    assert_eq!(store.get("task-u").await.unwrap(), Some(t.clone()));

    // A cancel reaches the runner through the flag, which its writes never clear.
    assert!(matches!(
        store
            .cancel("task-u", Timestamp(4_000), "stop")
            .await
            .unwrap(),
        Some(CancelOutcome::Requested(_))
    ));
    t.status = TaskStatus::Running;
    t.updated_at = Timestamp(5_000);
    assert!(!t.cancel_requested);
    assert_eq!(
        store.update_owned(&t, Timestamp(40_000)).await.unwrap(),
        Some(true)
    );
    let stored = store.get("task-u").await.unwrap().unwrap();
    assert!(stored.cancel_requested);
    assert_eq!(stored.updated_at, Timestamp(5_000));

    // The runner finishes it; after that the task is no longer its to write.
    t.status = TaskStatus::Canceled;
    t.reason = Some("canceled by a client".into());
    t.finished_at = Some(Timestamp(6_000));
    assert_eq!(
        store.update_owned(&t, Timestamp(40_000)).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        store.update_owned(&t, Timestamp(40_000)).await.unwrap(),
        None
    );
    let done = store.get("task-u").await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Canceled);
    assert_eq!(done.finished_at, Some(Timestamp(6_000)));

    // A reaped task is not its runner's any more either.
    store.insert(&task("task-r", REPO_A, 7_000)).await.unwrap();
    let mut r = store
        .claim_next("r1", Timestamp(8_000), Timestamp(9_000))
        .await
        .unwrap()
        .unwrap();
    let reaped = store
        .fail_abandoned(Timestamp(9_500), None, "lease ran out")
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1);
    r.summary = Some("too late".into());
    assert_eq!(
        store.update_owned(&r, Timestamp(99_000)).await.unwrap(),
        None
    );
    let stored = store.get("task-r").await.unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Failed);
    assert_eq!(stored.summary, None);
}

async fn cancel_in_each_state(db: &Db) {
    let store = db.open().await;
    assert_eq!(
        store.cancel("task-none", Timestamp(1), "x").await.unwrap(),
        None
    );

    // QUEUED: canceled at once.
    store.insert(&task("task-q", REPO_A, 1_000)).await.unwrap();
    let Some(CancelOutcome::Canceled(q)) = store
        .cancel("task-q", Timestamp(2_000), "no longer needed")
        .await
        .unwrap()
    else {
        panic!("a queued task is canceled");
    };
    assert_eq!(q.status, TaskStatus::Canceled);
    assert_eq!(q.reason.as_deref(), Some("no longer needed"));
    assert_eq!(q.finished_at, Some(Timestamp(2_000)));
    assert_eq!(q.updated_at, Timestamp(2_000));
    assert!(!q.cancel_requested);
    assert_eq!(store.get("task-q").await.unwrap(), Some(q.clone()));
    // Canceling again changes nothing.
    assert_eq!(
        store
            .cancel("task-q", Timestamp(3_000), "again")
            .await
            .unwrap(),
        Some(CancelOutcome::Finished(q.clone()))
    );

    // RUNNING (and WAITING_APPROVAL): the flag is set for the runner.
    for (id, status) in [
        ("task-run", TaskStatus::Running),
        ("task-wait", TaskStatus::WaitingApproval),
    ] {
        store.insert(&task(id, REPO_A, 4_000)).await.unwrap();
        let mut t = store
            .claim_next("r1", Timestamp(5_000), Timestamp(50_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.id, id);
        t.status = status;
        store.update_owned(&t, Timestamp(50_000)).await.unwrap();
        let Some(CancelOutcome::Requested(r)) =
            store.cancel(id, Timestamp(6_000), "stop").await.unwrap()
        else {
            panic!("an active task gets a cancel request");
        };
        assert_eq!(r.status, status);
        assert!(r.cancel_requested);
        assert_eq!(r.reason, None);
        assert_eq!(r.finished_at, None);
        assert_eq!(store.get(id).await.unwrap(), Some(r));
        assert!(matches!(
            store.cancel(id, Timestamp(7_000), "stop!").await.unwrap(),
            Some(CancelOutcome::Requested(_))
        ));
    }

    // Finished: nothing changes.
    store
        .insert(&task("task-done", REPO_A, 8_000))
        .await
        .unwrap();
    let mut t = store
        .claim_next("r1", Timestamp(9_000), Timestamp(90_000))
        .await
        .unwrap()
        .unwrap();
    t.status = TaskStatus::Succeeded;
    t.finished_at = Some(Timestamp(9_500));
    t.commit = Some("abc".into());
    store.update_owned(&t, Timestamp(90_000)).await.unwrap();
    let before = store.get("task-done").await.unwrap().unwrap();
    assert_eq!(
        store
            .cancel("task-done", Timestamp(10_000), "too late")
            .await
            .unwrap(),
        Some(CancelOutcome::Finished(before.clone()))
    );
    assert_eq!(store.get("task-done").await.unwrap(), Some(before));
}

async fn fail_abandoned_by_lease_and_owner(db: &Db) {
    let store = db.open().await;
    for (n, id) in ["task-r1", "task-r2", "task-r3", "task-edge", "task-queued"]
        .into_iter()
        .enumerate()
    {
        store
            .insert(&task(id, REPO_A, 1_000 + n as i64))
            .await
            .unwrap();
    }
    for (owner, lease) in [
        ("r1", 10_000),
        ("r2", 20_000),
        ("r3", 20_000),
        ("r3", 15_000),
    ] {
        store
            .claim_next(owner, Timestamp(2_000), Timestamp(lease))
            .await
            .unwrap()
            .unwrap();
    }

    // By lease: only leases that ended before now (task-edge's ends at now).
    let failed = store
        .fail_abandoned(
            Timestamp(15_000),
            None,
            "its replica stopped renewing the lease",
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f.id, "task-r1");
    assert_eq!(f.status, TaskStatus::Failed);
    assert_eq!(
        f.reason.as_deref(),
        Some("its replica stopped renewing the lease")
    );
    assert_eq!(f.finished_at, Some(Timestamp(15_000)));
    assert_eq!(f.owner.as_deref(), Some("r1"));
    assert_eq!(store.get("task-r1").await.unwrap().as_ref(), Some(f));

    // By owner: every active task it held, whatever its lease; others stay.
    let failed = store
        .fail_abandoned(Timestamp(15_000), Some("r3"), "replica r3 restarted")
        .await
        .unwrap();
    let ids: Vec<&str> = failed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["task-r3", "task-edge"]);
    assert!(
        failed.iter().all(|t| t.status == TaskStatus::Failed
            && t.reason.as_deref() == Some("replica r3 restarted"))
    );

    assert_eq!(
        store.get("task-r2").await.unwrap().unwrap().status,
        TaskStatus::Running
    );
    assert_eq!(
        store.get("task-queued").await.unwrap().unwrap().status,
        TaskStatus::Queued
    );
    // Finished tasks are never failed again.
    assert_eq!(
        store
            .fail_abandoned(Timestamp(16_000), Some("r3"), "again")
            .await
            .unwrap(),
        []
    );
    let failed = store
        .fail_abandoned(Timestamp(30_000), None, "late")
        .await
        .unwrap();
    let ids: Vec<&str> = failed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["task-r2"]);
}

async fn events_are_numbered_per_task(db: &Db) {
    let store = db.open().await;
    store.insert(&task("task-a", REPO_A, 1_000)).await.unwrap();
    store.insert(&task("task-b", REPO_A, 1_000)).await.unwrap();
    // The insert wrote the first event itself: QUEUED, seq 1, at the task's creation.
    let first = store.events("task-a", 0, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].seq, first[0].time, first[0].kind.as_str()),
        (1, Timestamp(1_000), "status")
    );
    assert_eq!(first[0].data, json!({"status": "QUEUED"}));
    for n in 1..=5 {
        let e = store
            .append_event(
                "task-a",
                Timestamp(2_000 + n),
                "log",
                &json!({"text": format!("line {n}")}),
            )
            .await
            .unwrap();
        assert_eq!(
            (e.seq, e.time, e.kind.as_str()),
            (n + 1, Timestamp(2_000 + n), "log")
        );
        if n <= 2 {
            let e = store
                .append_event(
                    "task-b",
                    Timestamp(3_000),
                    "status",
                    &json!({"status": "RUNNING"}),
                )
                .await
                .unwrap();
            assert_eq!(e.seq, n + 1);
        }
    }
    let a = store.events("task-a", 1, 100).await.unwrap();
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4, 5, 6]);
    assert_eq!(a[2].data, json!({"text": "line 3"}));
    assert_eq!(a[2].time, Timestamp(2_003));
    let page = store.events("task-a", 3, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(page[..], a[2..4]);
    assert_eq!(store.events("task-a", 6, 10).await.unwrap(), []);
    assert_eq!(store.events("task-a", 0, 0).await.unwrap(), []);
    let b = store.events("task-b", 1, 100).await.unwrap();
    assert_eq!(b.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(b[0].data, json!({"status": "RUNNING"}));
    assert_eq!(store.events("task-none", 0, 100).await.unwrap(), []);
    assert!(
        store
            .append_event("task-none", Timestamp(1), "log", &json!({}))
            .await
            .is_err()
    );

    // Appends from two handles at once still number the log 2, 3, 4, ... without gaps.
    store.insert(&task("task-c", REPO_A, 1_000)).await.unwrap();
    let other = Arc::new(db.open().await);
    let store = Arc::new(store);
    let mut writers = Vec::new();
    for w in 0..4 {
        let s: Arc<SqlTaskStore> = if w % 2 == 0 {
            Arc::clone(&store)
        } else {
            Arc::clone(&other)
        };
        writers.push(tokio::spawn(async move {
            for n in 0..10 {
                s.append_event("task-c", Timestamp(n), "log", &json!({"writer": w, "n": n}))
                    .await
                    .expect("append");
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let c = store.events("task-c", 0, 500).await.unwrap();
    assert_eq!(
        c.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=41).collect::<Vec<_>>()
    );
}

async fn counts_by_status(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.count_by_status().await.unwrap(), []);
    for n in 0..6 {
        store
            .insert(&task(&format!("task-{n}"), REPO_A, n))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        store
            .claim_next("r1", Timestamp(10), Timestamp(20))
            .await
            .unwrap();
    }
    store.cancel("task-5", Timestamp(11), "no").await.unwrap();
    store
        .fail_abandoned(Timestamp(11), Some("r1"), "gone")
        .await
        .unwrap();
    store.insert(&task("task-6", REPO_A, 6)).await.unwrap();
    store
        .claim_next("r2", Timestamp(12), Timestamp(99))
        .await
        .unwrap();
    assert_eq!(
        store.count_by_status().await.unwrap(),
        [
            (TaskStatus::Queued, 2),
            (TaskStatus::Running, 1),
            (TaskStatus::Failed, 3),
            (TaskStatus::Canceled, 1),
        ]
    );
}

async fn persists_and_migrations_rerun(db: &Db) {
    let store = db.open().await;
    store.insert(&full_task("task-kept")).await.unwrap();
    store
        .insert(&task("task-queued", REPO_A, 1_700_000_000_999))
        .await
        .unwrap();
    let claimed = store
        .claim_next(
            "r1",
            Timestamp(1_700_000_001_000),
            Timestamp(1_700_000_061_000),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .cancel(&claimed.id, Timestamp(1_700_000_001_500), "stop")
        .await
        .unwrap();
    store
        .append_event(
            &claimed.id,
            Timestamp(1_700_000_001_001),
            "step",
            &json!({"step": "clone"}),
        )
        .await
        .unwrap();
    let before = store.list(&TaskQuery::default()).await.unwrap();
    let events = store.events(&claimed.id, 0, 100).await.unwrap();
    if let Db::Sqlite(data) = db {
        // Its own file, in WAL mode, beside (not inside) the sandbox store's warden.db.
        assert!(data.path().join("tasks.db").is_file());
        assert!(data.path().join("tasks.db-wal").is_file());
        assert!(!data.path().join("warden.db").exists());
    }
    // Running the migrations again does nothing.
    store.migrate().await.unwrap();
    store.close().await;
    drop(store);

    // A new handle (migrating again on open) finds everything as it was.
    let reopened = db.open().await;
    reopened.migrate().await.unwrap();
    assert_eq!(reopened.list(&TaskQuery::default()).await.unwrap(), before);
    assert_eq!(reopened.events(&claimed.id, 0, 100).await.unwrap(), events);
    let kept = reopened.get(&claimed.id).await.unwrap().unwrap();
    assert!(kept.cancel_requested);
    assert_eq!(kept.owner.as_deref(), Some("r1"));
    // The log continues where it stopped.
    let next = reopened
        .append_event(&claimed.id, Timestamp(1_700_000_002_000), "log", &json!({}))
        .await
        .unwrap();
    assert_eq!(next.seq, 3);
    // The idempotency key still holds.
    let mut retry = full_task("task-other");
    retry.created_at = Timestamp(5);
    assert!(matches!(
        reopened.insert(&retry).await.unwrap(),
        Inserted::Existing(t) if t.id == "task-kept"
    ));
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::Db::sqlite();
                    super::$scenario(&db).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::Db::postgres(stringify!($scenario)).await;
                    super::$scenario(&db).await;
                }
            )*
        }
    };
}

on_both_backends!(
    insert_get_and_idempotency,
    list_filters_and_pages,
    claim_oldest_first,
    concurrent_claims_take_each_task_once,
    update_owned_follows_the_owner,
    cancel_in_each_state,
    fail_abandoned_by_lease_and_owner,
    events_are_numbered_per_task,
    counts_by_status,
    persists_and_migrations_rerun,
);

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = SqlTaskStore::sqlite_in_memory().await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    let t = task("task-m", REPO_A, 1);
    store.insert(&t).await.unwrap();
    assert_eq!(store.get("task-m").await.unwrap(), Some(t));
    let claimed = store
        .claim_next("r", Timestamp(2), Timestamp(3))
        .await
        .unwrap();
    assert_eq!(claimed.map(|t| t.attempts), Some(1));
    store
        .append_event("task-m", Timestamp(4), "log", &json!(1))
        .await
        .unwrap();
    assert_eq!(store.events("task-m", 0, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn database_values_are_checked() {
    let data = tempfile::tempdir().unwrap();
    let e = open_task_store(Some("mysql://root:hunter2@db/warden"), data.path())
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, TaskStoreError::Open { .. }), "{message}");
    assert!(
        message.contains("sqlite://") && message.contains("postgres://"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    // A path, and a sqlite:// URL, each make their file.
    let path = data.path().join("sub/queue.db");
    let store = open_task_store(Some(path.to_str().unwrap()), data.path())
        .await
        .unwrap();
    store.insert(&task("task-p", REPO_A, 1)).await.unwrap();
    assert!(path.is_file());
    let url = format!("sqlite://{}", data.path().join("other.db").display());
    let store = open_task_store(Some(&url), data.path()).await.unwrap();
    assert!(store.get("task-p").await.unwrap().is_none());
    assert!(data.path().join("other.db").is_file());
}

/// The task store's migrations are recorded apart from the sandbox store's: both can live in
/// one SQLite file.
#[tokio::test]
async fn task_migrations_do_not_collide_with_the_sandbox_store() {
    let data = tempfile::tempdir().unwrap();
    let sandboxes = warden_server::Store::open(data.path()).await.unwrap();
    let shared = data.path().join("warden.db");
    let tasks = open_task_store(Some(shared.to_str().unwrap()), data.path())
        .await
        .unwrap();
    tasks.insert(&task("task-s", REPO_A, 1)).await.unwrap();
    sandboxes.close().await;
    drop(tasks);
    warden_server::Store::open(data.path()).await.unwrap();
    let tasks = open_task_store(Some(shared.to_str().unwrap()), data.path())
        .await
        .unwrap();
    assert!(tasks.get("task-s").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_errors_never_show_the_password() {
    let db = Db::postgres("password").await;
    let Db::Postgres { cluster, url, data } = &db else {
        unreachable!()
    };
    let wrong = url.replace(cluster.password(), "not-the-password");
    let e = open_task_store(Some(&wrong), data.path())
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, TaskStoreError::Open { .. }), "{message}");
    assert!(message.contains("postgres:***@127.0.0.1"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    let store = db.open().await;
    assert_eq!(store.backend(), "postgres");
    assert!(!store.url().contains(cluster.password()), "{}", store.url());
    assert!(!format!("{store:?}").contains(cluster.password()));
}
