//! Instances owned shard by shard, on a real NATS server: replicas of a stateful service split
//! the shards with each shard held by exactly one, a replica that joins takes about a third
//! from two and nothing else moves, one that leaves hands its shards over, a write under way
//! holds its shard until it ends, a dead replica's shards are taken once its card has been
//! silent for the TTL, a replica cut off from NATS stops writing before that, and callers send
//! an instance's calls to the replica holding its shard.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cocon_common::ticket::MeshKey;
use cocon_mesh::shard_map::winner;
use cocon_mesh::{
    Announcement, Clients, Directory, DirectoryConfig, Endpoints, LocalServices, MeshError, SHARDS, ServiceKind,
    ShardGuardLayer, ShardMap, shard_of,
};
use cocon_proto::notifications::v1 as pb;
use cocon_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use cocon_proto::notifications::v1::notifications_service_server::NotificationsServiceServer;
use cocon_tests::NatsServer;

const CONFIG: DirectoryConfig = DirectoryConfig {
    heartbeat_ms: 200,
    ttl_ms: 1_000,
    drain_notice_ms: 0,
};

/// A documents replica owning shards (its endpoint is never called here).
async fn replica(nats: &NatsServer, key: &MeshKey, port: u16) -> (Directory, Announcement) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let directory = Directory::open(client, key.clone(), None, CONFIG, 1, Directory::new_id())
        .await
        .unwrap();
    let announcement = directory
        .announce_sharded(ServiceKind::Documents, &format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    (directory, announcement)
}

/// Who holds each shard, when every shard is held by exactly one of `replicas`.
fn split(replicas: &[&Announcement]) -> Option<Vec<usize>> {
    let mut holder = vec![usize::MAX; SHARDS];
    for (i, r) in replicas.iter().enumerate() {
        for shard in r.shards().unwrap().held() {
            if holder[shard] != usize::MAX {
                return None;
            }
            holder[shard] = i;
        }
    }
    holder.iter().all(|h| *h != usize::MAX).then_some(holder)
}

/// Polls every 20 ms until every shard has one holder among `replicas` and each holds what
/// rendezvous hashing gives it; the split and the time it took.
async fn settled(replicas: &[(&Directory, &Announcement)], limit: Duration) -> (Vec<usize>, Duration) {
    let start = Instant::now();
    let ids: Vec<&str> = replicas.iter().map(|(d, _)| d.id()).collect();
    let announcements: Vec<&Announcement> = replicas.iter().map(|(_, a)| *a).collect();
    loop {
        if let Some(holders) = split(&announcements)
            && (0..SHARDS).all(|s| winner(s, ids.iter().copied()) == Some(ids[holders[s]]))
        {
            return (holders, start.elapsed());
        }
        assert!(start.elapsed() < limit, "the shards did not settle within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(holders: &[usize]) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for h in holders {
        *counts.entry(*h).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_replicas_split_the_shards_and_a_newcomer_takes_only_its_part() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let (da, a) = replica(&nats, &key, 1).await;
    let (all, took) = settled(&[(&da, &a)], Duration::from_secs(10)).await;
    assert_eq!(counts(&all)[&0], SHARDS);
    println!("one replica holds all {SHARDS} shards {took:?} after it started");

    let (db, b) = replica(&nats, &key, 2).await;
    let (two, took) = settled(&[(&da, &a), (&db, &b)], Duration::from_secs(10)).await;
    let to_b = counts(&two)[&1];
    assert!((400..=624).contains(&to_b), "B took {to_b} of {SHARDS}");
    println!("a second replica took {to_b} shards in {took:?}");

    let (dc, c) = replica(&nats, &key, 3).await;
    let (three, took) = settled(&[(&da, &a), (&db, &b), (&dc, &c)], Duration::from_secs(10)).await;
    let moved: Vec<usize> = (0..SHARDS).filter(|s| two[*s] != three[*s]).collect();
    assert!(
        moved.iter().all(|s| three[*s] == 2),
        "only shards going to the newcomer move"
    );
    assert!(
        (250..=430).contains(&moved.len()),
        "{} of {SHARDS} shards moved to a third replica",
        moved.len()
    );
    println!("a third replica took {} shards in {took:?}", moved.len());

    // A write on one of A's instances is taken by A alone, with its lease's token.
    let instance = (0..)
        .map(|i| format!("pupil{i}.school.example"))
        .find(|i| three[shard_of(i)] == 0)
        .unwrap();
    let hold = a.shards().unwrap().hold(&instance).unwrap();
    assert!(hold.token > 0);
    drop(hold);
    match b.shards().unwrap().hold(&instance) {
        Err(MeshError::NotOwner { owner, shard, .. }) => {
            assert_eq!(shard, shard_of(&instance));
            assert_eq!(owner.as_deref(), Some("http://127.0.0.1:1"), "B names the owner");
        }
        other => panic!("B took a write on A's shard: {:?}", other.map(|h| h.token)),
    }

    // C stops: its shards go back to where they were, and nothing else moves.
    c.withdraw().await;
    let (back, took) = settled(&[(&da, &a), (&db, &b)], Duration::from_secs(10)).await;
    assert_eq!(back, two, "the shards went back as they were before C");
    println!("C withdrew: its shards were taken back in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_write_under_way_holds_its_shard_until_it_ends() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let (da, a) = replica(&nats, &key, 1).await;
    settled(&[(&da, &a)], Duration::from_secs(10)).await;
    let (db, b) = replica(&nats, &key, 2).await;
    let ids = [da.id(), db.id()];
    // An instance that moves to B once B joins, written on A as B arrives.
    let instance = (0..)
        .map(|i| format!("pupil{i}.school.example"))
        .find(|i| winner(shard_of(i), ids) == Some(db.id()))
        .unwrap();
    let shard = shard_of(&instance);
    let write = a.shards().unwrap().hold(&instance).unwrap();

    // B takes every other shard it wins; this one stays A's while the write runs, and no
    // new write starts on it anywhere.
    let start = Instant::now();
    loop {
        let held = b.shards().unwrap().held();
        assert!(!held.contains(&shard), "B took a shard with a write under way on A");
        if held.len() == (0..SHARDS).filter(|s| winner(*s, ids) == Some(db.id())).count() - 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "B did not take its shards");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match a.shards().unwrap().hold(&instance) {
        Err(MeshError::NotOwner { owner: None, .. }) => {}
        other => panic!(
            "a new write started on a shard being handed over: {:?}",
            other.map(|h| h.token)
        ),
    }
    assert!(!b.shards().unwrap().held().contains(&shard));
    let token = write.token;

    drop(write);
    let (_, took) = settled(&[(&da, &a), (&db, &b)], Duration::from_secs(5)).await;
    let hold = b.shards().unwrap().hold(&instance).unwrap();
    assert!(hold.token > token, "the new owner's token fences the old one");
    println!("the shard moved {took:?} after its write ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_dead_replicas_shards_are_taken_once_its_card_is_silent() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let (da, a) = replica(&nats, &key, 1).await;
    let (db, b) = replica(&nats, &key, 2).await;
    let (two, _) = settled(&[(&da, &a), (&db, &b)], Duration::from_secs(10)).await;
    let of_b: Vec<usize> = (0..SHARDS).filter(|s| two[*s] == 1).collect();

    // Killed: no word to NATS, its leases stay.
    drop(b);
    let died = Instant::now();
    let (all, took) = settled(&[(&da, &a)], Duration::from_secs(10)).await;
    assert_eq!(counts(&all)[&0], SHARDS);
    assert!(
        took >= Duration::from_millis(700),
        "A took a live-looking replica's shards after {took:?}"
    );
    for shard in of_b {
        assert_eq!(a.shards().unwrap().holder(shard).as_deref(), Some(da.id()));
    }
    println!(
        "a dead replica's shards were taken {:?} after its death (TTL {} ms)",
        died.elapsed(),
        CONFIG.ttl_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_replica_cut_off_from_nats_stops_writing_before_its_card_expires() {
    let mut nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let (da, a) = replica(&nats, &key, 1).await;
    settled(&[(&da, &a)], Duration::from_secs(10)).await;
    let before = a.shards().unwrap().hold("alice.example").unwrap().token;

    nats.kill();
    let cut = Instant::now();
    while a.shards().unwrap().hold("alice.example").is_ok() {
        assert!(cut.elapsed() < Duration::from_secs(5), "still writing with NATS gone");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = cut.elapsed();
    // Its last card was written at most a heartbeat before the cut; others would think it
    // dead a whole TTL after that card.
    assert!(
        stopped < Duration::from_millis(CONFIG.ttl_ms),
        "stopped writing {stopped:?} after the cut: past the TTL"
    );
    println!("cut off from NATS, the replica stopped writing after {stopped:?}");

    // Then it lets go of its shards, to take them back by compare-and-set.
    while !a.shards().unwrap().held().is_empty() {
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "still holding shards with NATS gone"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    nats.restart().await.unwrap();
    let back = Instant::now();
    settled(&[(&da, &a)], Duration::from_secs(20)).await;
    let after = a.shards().unwrap().hold("alice.example").unwrap().token;
    assert!(after > before, "its shards were taken back with new tokens");
    println!("NATS back: its shards taken back in {:?}", back.elapsed());
}

mod common;
use common::Named;

/// A notifications replica answering with its name, owning shards; with `guard`, its calls
/// run only for the instances whose shard it holds. Its directory, card and endpoint.
async fn named(nats: &NatsServer, key: &MeshKey, name: &'static str, guard: bool) -> (Directory, Announcement, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let client = async_nats::connect(nats.url()).await.unwrap();
    let directory = Directory::open(client, key.clone(), None, CONFIG, 1, Directory::new_id())
        .await
        .unwrap();
    let announcement = directory
        .announce_sharded(ServiceKind::Notifications, &endpoint)
        .await
        .unwrap();
    let guard = guard.then(|| {
        ShardGuardLayer::new(
            announcement.shards().unwrap().clone(),
            "/cocon.notifications.v1.NotificationsService/",
        )
    });
    tokio::spawn(async move {
        let service = NotificationsServiceServer::new(Named(name));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let mut server = tonic::transport::Server::builder();
        match guard {
            Some(guard) => {
                server
                    .layer(guard)
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await
            }
            None => server.add_service(service).serve_with_incoming(incoming).await,
        }
        .unwrap();
    });
    (directory, announcement, endpoint)
}

/// Which of `replicas` answers a call for each of 200 instances, once the caller's view of the
/// shards agrees with the replicas'; every call must succeed.
async fn answers(
    clients: &Clients,
    map: Option<&ShardMap>,
    replicas: &[(&'static str, &Announcement)],
) -> Vec<(String, String)> {
    let agreed = Instant::now();
    while let Some(map) = map
        && (0..SHARDS).any(|s| {
            let holder = replicas.iter().find(|(_, a)| a.shards().unwrap().held().contains(&s));
            holder.map(|(_, a)| a.shards().unwrap().holder(s)) != Some(map.holder(s).map(|h| h.to_string()))
        })
    {
        assert!(
            agreed.elapsed() < Duration::from_secs(10),
            "the caller's view did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = Vec::new();
    for i in 0..200 {
        let instance = format!("{i:032x}");
        let expected = replicas
            .iter()
            .find(|(_, a)| a.shards().unwrap().held().contains(&shard_of(&instance)))
            .map(|(name, _)| name.to_string())
            .unwrap();
        let mut notifications = clients.notifications.clone();
        let answered = notifications
            .create(pb::CreateRequest {
                scope: Some(pb::Scope {
                    instance: instance.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("the call for {instance} failed: {e}"))
            .into_inner()
            .dropped;
        answers.push((expected, answered));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_an_instances_calls_go_to_the_replica_holding_its_shard() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let (da, a, _) = named(&nats, &key, "A", false).await;
    let (db, b, _) = named(&nats, &key, "B", false).await;
    settled(&[(&da, &a), (&db, &b)], Duration::from_secs(10)).await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let caller = Directory::open(client, key.clone(), None, CONFIG, 1, Directory::new_id())
        .await
        .unwrap();
    let route = caller.sharded_route(ServiceKind::Notifications).await.unwrap();
    assert!(route.follows_shards());
    let map = caller.shard_map(ServiceKind::Notifications).await.unwrap();
    let clients = Clients::connect(LocalServices::default(), &Endpoints::default(), None, Some(&caller)).unwrap();

    let both = answers(&clients, Some(&map), &[("A", &a), ("B", &b)]).await;
    assert!(both.iter().all(|(expected, got)| expected == got), "{both:?}");
    let by_b = both.iter().filter(|(_, got)| got == "B").count();
    assert!((60..=140).contains(&by_b), "B answered {by_b} of 200");

    // B stops: its instances are A's, and their calls follow.
    b.withdraw().await;
    settled(&[(&da, &a)], Duration::from_secs(10)).await;
    let alone = answers(&clients, Some(&map), &[("A", &a)]).await;
    assert!(alone.iter().all(|(_, got)| got == "A"), "{alone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_replica_refuses_an_instance_it_does_not_hold_and_the_caller_retries_at_the_holder() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let (da, a, a_endpoint) = named(&nats, &key, "A", true).await;
    let (db, b, b_endpoint) = named(&nats, &key, "B", true).await;
    settled(&[(&da, &a), (&db, &b)], Duration::from_secs(10)).await;

    // The refusal: B, asked for an instance of A's, runs nothing and names A.
    let instance = (0..)
        .map(|i| format!("{i:032x}"))
        .find(|i| a.shards().unwrap().held().contains(&shard_of(i)))
        .unwrap();
    let mut direct = NotificationsServiceClient::connect(b_endpoint).await.unwrap();
    let mut request = tonic::Request::new(pb::CreateRequest {
        scope: Some(pb::Scope {
            instance: instance.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert(cocon_mesh::INSTANCE_HEADER, instance.parse().unwrap());
    let refused = direct.create(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get(cocon_mesh::OWNER_HEADER)
            .unwrap()
            .to_str()
            .unwrap(),
        a_endpoint
    );

    // A caller that does not follow the shards sends calls in turn, half of them to the
    // wrong replica first: each is refused there and sent again to the holder it names.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let caller = Directory::open(client, key.clone(), None, CONFIG, 1, Directory::new_id())
        .await
        .unwrap();
    let route = caller.route(ServiceKind::Notifications);
    let listed = Instant::now();
    while route.replicas().len() < 2 {
        assert!(
            listed.elapsed() < Duration::from_secs(5),
            "the caller did not find both replicas"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!route.follows_shards());
    let clients = Clients::connect(LocalServices::default(), &Endpoints::default(), None, Some(&caller)).unwrap();
    let answered = answers(&clients, None, &[("A", &a), ("B", &b)]).await;
    assert!(answered.iter().all(|(expected, got)| expected == got), "{answered:?}");
}
