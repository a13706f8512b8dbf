//! Jobs over several processes on real NATS: the keeper of the jobs (`--services jobs`) and
//! runners (`jobs.role = "runner"`) take the jobs from one JetStream work queue. A runner killed
//! with SIGKILL mid-run loses nothing (another runs the job after the ack wait), and NATS
//! stopped for 30 s while triggers fire loses nothing and runs nothing twice.

use std::collections::HashMap;
use std::time::Duration;

use cocon_tests::{Api, Cocon, NatsServer, make_mesh_key, make_mesh_tls};
use serde_json::json;

use super::jobs::{PROBE_MANIFEST, attr, cli, id, processes_of, push, trigger, until, write_probe, write_todo_app};

/// A deployment: documents and files, the edge (gateway and auth), the keeper of the jobs, and
/// `runners` runner processes, all with `env` on the jobs processes. The keeper runs no
/// konnector itself (concurrency 0): the runners take them all.
struct Mesh {
    dir: tempfile::TempDir,
    _documents: Cocon,
    edge: Cocon,
    keeper: Cocon,
    runners: Vec<Cocon>,
}

async fn mesh(nats: &NatsServer, runners: usize, env: &[(&str, &str)]) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let key = make_mesh_key(dir.path()).unwrap().to_str().unwrap().to_string();
    let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
    let konnectors = dir.path().join("konnectors");
    let start = |name: &str, services: &str, env: Vec<(String, String)>| {
        super::split::mesh_process(&dir.path().join(name), services, nats, &key, &tls, env).start()
    };
    let documents = start("documents", "documents,files", vec![]).await.unwrap();
    let data = documents.grpc.clone().unwrap();
    // The jobs processes share the konnectors' code (a volume every one mounts).
    let mut jobs_env: Vec<(String, String)> = vec![
        ("COCON_ENDPOINTS__DOCUMENTS".into(), data.clone()),
        ("COCON_ENDPOINTS__FILES".into(), data.clone()),
        (
            "COCON_JOBS__KONNECTORS__DIR".into(),
            konnectors.to_str().unwrap().into(),
        ),
    ];
    jobs_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    // The keeper installs the built-in apps of new instances through auth, on the edge that
    // starts after it (the edge calls the keeper): the edge's gRPC port is chosen now.
    let edge_grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut env_of_keeper = jobs_env.clone();
    env_of_keeper.extend([
        ("COCON_JOBS__WORKERS__KONNECTOR__CONCURRENCY".into(), "0".into()),
        ("COCON_ENDPOINTS__AUTH".into(), format!("http://{edge_grpc}")),
    ]);
    let keeper = start("keeper", "jobs", env_of_keeper).await.unwrap();
    let edge = super::split::mesh_process(
        &dir.path().join("edge"),
        "gateway,auth",
        nats,
        &key,
        &tls,
        vec![
            ("COCON_ENDPOINTS__DOCUMENTS", data.clone()),
            ("COCON_ENDPOINTS__FILES", data),
            ("COCON_ENDPOINTS__JOBS", keeper.grpc.clone().unwrap()),
        ],
    )
    .args(["--grpc-addr".to_string(), edge_grpc.to_string()])
    .start()
    .await
    .unwrap();
    let mut runner_env = jobs_env;
    runner_env.extend([
        ("COCON_JOBS__ROLE".to_string(), "runner".to_string()),
        ("COCON_ENDPOINTS__JOBS".into(), keeper.grpc.clone().unwrap()),
        ("COCON_ENDPOINTS__AUTH".into(), edge.grpc.clone().unwrap()),
        ("COCON_JOBS__KONNECTORS__STACK_URL".into(), edge.http.clone()),
    ]);
    let mut started = Vec::new();
    for i in 0..runners {
        started.push(start(&format!("runner-{i}"), "jobs", runner_env.clone()).await.unwrap());
    }
    Mesh {
        dir,
        _documents: documents,
        edge,
        keeper,
        runners: started,
    }
}

impl Mesh {
    /// What `process`'s gRPC health says of `service`, over the mesh's mutual TLS.
    async fn health(&self, process: &Cocon, service: &str) -> Result<i32, tonic::Code> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let tls = self.dir.path().join("mesh-tls");
        let pem = |f: &str| std::fs::read(tls.join(f)).unwrap();
        let endpoint = process.grpc.clone().unwrap().replacen("http://", "https://", 1);
        let channel = Endpoint::from_shared(endpoint)
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem("ca.pem")))
                    .identity(Identity::from_pem(pem("cert.pem"), pem("key.pem")))
                    .domain_name("cocon-mesh"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        match HealthClient::new(channel).check(request).await {
            Ok(answer) => Ok(answer.into_inner().status),
            Err(status) => Err(status.code()),
        }
    }

    /// Installs the probe konnector for alice.test through the command line.
    fn install_probe(&self) {
        let code = self.dir.path().join("probe");
        write_probe(&code, PROBE_MANIFEST);
        let (ok, _, err) = cli(
            &self.edge,
            &self.dir.path().join("edge"),
            &["konnectors", "install", "probe", code.to_str().unwrap()],
        );
        assert!(ok, "{err}");
    }
}

/// The process, among `candidates`, that `pid` descends from.
fn ancestor_among(pid: u32, candidates: &[u32]) -> Option<u32> {
    let mut pid = pid;
    while pid > 1 {
        if candidates.contains(&pid) {
            return Some(pid);
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        pid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())?;
    }
    None
}

/// The pids of the processes whose environment names `job`.
fn pids_of(job: &str) -> Vec<u32> {
    let needle = format!("COZY_JOB_ID={job}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            env.split(|b| *b == 0).any(|v| v == needle.as_bytes()).then_some(pid)
        })
        .collect()
}

/// The probe's `pause` documents, by the job that saved them.
async fn saved_by_job(api: &Api) -> HashMap<String, usize> {
    let docs = api
        .get("/data/io.cozy.konnector.results/_all_docs?include_docs=true")
        .await;
    let mut by_job = HashMap::new();
    for row in docs.body["rows"].as_array().into_iter().flatten() {
        if row["doc"]["mode"] == "pause" {
            *by_job
                .entry(row["doc"]["job"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    by_job
}

/// A job runs on one runner; that runner is killed with SIGKILL mid-run; the other takes the job
/// over once the ack wait (its time limit and a margin) has passed, and the job ends done, with
/// one completed run and nothing of the killed run left behind.
#[tokio::test]
async fn test_a_job_survives_the_kill_of_the_runner_running_it() {
    let nats = NatsServer::start().await.unwrap();
    // The run is held until the test releases it, after the kill: the killed run cannot have
    // saved, however loaded the machine.
    let mut mesh = mesh(&nats, 2, &[("COCON_JOBS__WORKERS__KONNECTOR__TIMEOUT_SECS", "15")]).await;
    let api = mesh
        .edge
        .instance(
            "alice.test",
            "io.cozy.jobs io.cozy.konnector.results io.cozy.konnectors",
        )
        .await
        .unwrap();
    mesh.install_probe();
    // A web app installed through the edge: the keeper streams the installation over gRPC.
    let todo = mesh.dir.path().join("todo");
    write_todo_app(&todo, json!({}));
    let (ok, out, err) = cli(
        &mesh.edge,
        &mesh.dir.path().join("edge"),
        &["apps", "install", "todo", todo.to_str().unwrap()],
    );
    assert!(ok && out.contains("\"slug\": \"todo\""), "{out}\n{err}");

    // A runner serves no API: ready (it runs jobs), yet no health check names the jobs' API on
    // it, so nothing routes calls there; the keeper's does.
    let jobs_api = "cocon.jobs.v1.JobsService";
    let runner = &mesh.runners[0];
    let ready = reqwest::get(format!("{}/ready", runner.admin)).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        mesh.health(runner, jobs_api).await,
        Err(tonic::Code::NotFound),
        "a runner answers no jobs call"
    );
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(
        mesh.health(&mesh.keeper, jobs_api).await,
        Ok(ServingStatus::Serving as i32)
    );

    let queued = push(
        &api,
        "konnector",
        json!({"arguments": {"konnector": "probe", "mode": "hold"}}),
    )
    .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let job = id(&queued);
    let runners: Vec<u32> = mesh.runners.iter().map(Cocon::pid).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Node itself, not only its sandbox's first process: bubblewrap has armed its death with
    // its parent's by then (a runner killed within the milliseconds before leaves it orphaned).
    let holder = loop {
        let holder = pids_of(&job)
            .into_iter()
            .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "node"))
            .find_map(|pid| ancestor_among(pid, &runners));
        if holder.is_some() || tokio::time::Instant::now() > deadline {
            break holder;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let holder = holder.expect("a runner runs the konnector");
    let running = api.get(&format!("/jobs/{job}")).await;
    assert_eq!(attr(&running, "state"), "running", "{}", running.text);

    let index = runners.iter().position(|p| *p == holder).unwrap();
    mesh.runners[index].kill9();
    // The sandbox dies with its runner: nothing of the killed run goes on.
    let gone = until(&api, &format!("/jobs/{job}"), |_| processes_of(&job) == 0).await;
    assert_eq!(processes_of(&job), 0, "{}", gone.text);
    let release = api
        .put(
            &format!("/data/io.cozy.konnector.results/release-{job}"),
            &json!({"mode": "release"}),
        )
        .await;
    assert_eq!(release.status, 200, "{}", release.text);

    // The survivor takes it over: its sandbox runs the job, and the job ends done.
    let survivor = mesh.runners[1 - index].pid();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut taken_over = false;
    let done = loop {
        taken_over |= pids_of(&job)
            .into_iter()
            .any(|pid| ancestor_among(pid, &[survivor]).is_some());
        let reply = api.get(&format!("/jobs/{job}")).await;
        if attr(&reply, "state") == "done" || tokio::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    assert!(taken_over, "the other runner ran the job");
    let saved = saved_by_job(&api).await;
    assert_eq!(
        saved.get(&job),
        Some(&1),
        "the killed run saved nothing, the run that took over saved once: {saved:?}"
    );
}

/// NATS stops for 30 s while an `@every` trigger fires each second: the firings are recorded
/// (the jobs' log is the keeper's), offered once NATS is back, and each job runs exactly once,
/// on one of two runners.
#[tokio::test]
async fn test_nats_stopped_for_30_s_loses_no_job_and_runs_none_twice() {
    let mut nats = NatsServer::start().await.unwrap();
    let mesh = mesh(&nats, 2, &[]).await;
    let api = mesh
        .edge
        .instance(
            "alice.test",
            "io.cozy.jobs io.cozy.triggers io.cozy.konnector.results io.cozy.konnectors",
        )
        .await
        .unwrap();
    mesh.install_probe();
    let created = trigger(
        &api,
        json!({"type": "@every", "arguments": "1s", "worker": "konnector",
               "message": {"konnector": "probe", "mode": "pause", "pause_ms": 10}}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let trigger_id = id(&created);
    let jobs_path = format!("/jobs/triggers/{trigger_id}/jobs?Limit=1000");
    let first = until(&api, &jobs_path, |r| {
        r.body["data"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["attributes"]["state"] == "done"))
    })
    .await;
    assert!(
        first.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["attributes"]["state"] == "done"),
        "{}",
        first.text
    );

    nats.kill();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // While NATS was away the trigger went on firing: its jobs wait, queued.
    let during = api.get(&jobs_path).await;
    let waiting: Vec<String> = during.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["attributes"]["state"] == "queued")
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        waiting.len() >= 20,
        "about one job a second was recorded: {}",
        during.text
    );
    nats.restart().await.unwrap();

    // Once NATS is back, every job recorded meanwhile runs, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let after = loop {
        let reply = api.get(&jobs_path).await;
        let open = reply.body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| waiting.iter().any(|w| j["id"] == w.as_str()))
            .filter(|j| j["attributes"]["state"] != "done")
            .count();
        if open == 0 || tokio::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deleted = api.delete(&format!("/jobs/triggers/{trigger_id}")).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    for job in &waiting {
        let state = after.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == job.as_str())
            .map(|j| j["attributes"]["state"].clone());
        assert_eq!(state, Some(json!("done")), "job {job}: {}", after.text);
    }
    let saved = saved_by_job(&api).await;
    for job in &waiting {
        assert_eq!(saved.get(job), Some(&1), "job {job} ran exactly once: {saved:?}");
    }
}
