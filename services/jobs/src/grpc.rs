//! The gRPC face of the service: it checks each call's ticket, calls the operation, and
//! translates its answer and its error.

use std::time::Duration;

use cocon_proto::jobs::v1 as pb;
use cocon_proto::jobs::v1::jobs_service_server::JobsService as Api;
use tonic::{Request, Response, Status};

use crate::error::{JobsError, Result};
use crate::jobs::NewJob;
use crate::runner::Start;
use crate::service::JobsService;
use crate::triggers::{NewTrigger, TriggerState};

/// Who calls: the instance, whether the caller is trusted (a CLI token), and the domain it
/// named.
pub(crate) struct Caller {
    pub instance: String,
    pub trusted: bool,
    pub domain: String,
}

impl Caller {
    /// The caller as an installer of apps, asking through web app `app` (empty otherwise).
    fn installer<'a>(&'a self, app: &'a str) -> crate::apps::Installer<'a> {
        crate::apps::Installer {
            instance: &self.instance,
            domain: &self.domain,
            trusted: self.trusted,
            app,
        }
    }
}

/// What a runner's ticket is derived for.
pub(crate) const RUN_PURPOSE: &str = "cocon-jobs-run";

/// The longest a `WaitJob` call waits when it names no limit.
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl JobsService {
    /// The caller of a call, once its ticket holds.
    fn scope(&self, scope: Option<pb::Scope>) -> Result<Caller> {
        let scope = scope.ok_or_else(|| JobsError::BadRequest("missing scope".into()))?;
        self.check_ticket(&scope.instance, &scope.ticket)?;
        Ok(Caller {
            instance: scope.instance,
            trusted: scope.trusted,
            domain: scope.domain,
        })
    }

    /// The instance of a runner's call: its ticket is derived from the mesh key for runs, which
    /// only the jobs processes hold (a gateway's tickets come from the auth service).
    fn runner_scope(&self, scope: Option<pb::Scope>) -> Result<String> {
        let scope = scope.ok_or_else(|| JobsError::BadRequest("missing scope".into()))?;
        if scope.instance.is_empty()
            || !self
                .inner
                .mesh_key
                .check_derived(RUN_PURPOSE, &[&scope.instance], &scope.ticket)
        {
            return Err(JobsError::Denied("only a jobs process records runs".into()));
        }
        Ok(scope.instance)
    }

    async fn trigger_answer(
        &self,
        instance: &str,
        trigger: cocon_proto::events::v1::Trigger,
    ) -> Result<pb::TriggerAnswer> {
        let state = self.trigger_state(instance, &trigger).await?;
        Ok(pb::TriggerAnswer {
            trigger: Some(trigger),
            state: Some(state.into()),
        })
    }
}

impl From<TriggerState> for pb::TriggerState {
    fn from(s: TriggerState) -> pb::TriggerState {
        pb::TriggerState {
            status: s.status,
            last_success_us: s.last_success_us,
            last_successful_job_id: s.last_successful_job_id,
            last_execution_us: s.last_execution_us,
            last_executed_job_id: s.last_executed_job_id,
            last_failure_us: s.last_failure_us,
            last_failed_job_id: s.last_failed_job_id,
            last_error: s.last_error,
            last_manual_execution_us: s.last_manual_execution_us,
            last_manual_job_id: s.last_manual_job_id,
            consecutive_failures: s.consecutive_failures,
            last_error_kind: s.last_error_kind,
            held: s.held,
            next_try_us: s.next_try_us,
        }
    }
}

fn job(job: cocon_proto::events::v1::Job) -> Response<pb::JobAnswer> {
    Response::new(pb::JobAnswer { job: Some(job) })
}

#[tonic::async_trait]
impl Api for JobsService {
    async fn push_job(&self, request: Request<pb::PushJobRequest>) -> Result<Response<pb::JobAnswer>, Status> {
        let r = request.into_inner();
        let Caller {
            instance,
            trusted,
            domain,
        } = self.scope(r.scope)?;
        self.check_worker(&r.worker, trusted)?;
        crate::jobs::check_message(&r.worker, &r.arguments, trusted)?;
        if r.forward_logs && !trusted {
            return Err(JobsError::Denied("only the command line may forward a job's logs".into()).into());
        }
        let message = crate::service::json_or_empty(&r.arguments, "the job's arguments")?;
        let new = NewJob {
            domain,
            worker: r.worker,
            message,
            max_exec_count: r.max_exec_count,
            timeout_ms: r.timeout_ms,
            manual: r.manual,
            forward_logs: r.forward_logs,
            ..NewJob::default()
        };
        Ok(job(self.push_job(&instance, new).await?))
    }

    async fn get_job(&self, request: Request<pb::JobRequest>) -> Result<Response<pb::JobAnswer>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        Ok(job(self.get_job(&instance, &r.id).await?))
    }

    async fn wait_job(&self, request: Request<pb::WaitJobRequest>) -> Result<Response<pb::JobAnswer>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        let max = match r.max_wait_ms {
            0 => MAX_WAIT,
            ms => Duration::from_millis(ms).min(MAX_WAIT),
        };
        Ok(job(self.wait_job(&instance, &r.id, max).await?))
    }

    async fn list_queue(&self, request: Request<pb::ListQueueRequest>) -> Result<Response<pb::JobList>, Status> {
        let r = request.into_inner();
        let Caller { instance, trusted, .. } = self.scope(r.scope)?;
        self.check_worker(&r.worker, trusted)?;
        let jobs = self.list_queue(&instance, &r.worker).await?;
        Ok(Response::new(pb::JobList { jobs }))
    }

    async fn patch_job(&self, request: Request<pb::PatchJobRequest>) -> Result<Response<pb::JobAnswer>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        Ok(job(self.patch_job(&instance, &r.id, &r.state, &r.error).await?))
    }

    async fn purge_jobs(&self, request: Request<pb::PurgeJobsRequest>) -> Result<Response<pb::CountAnswer>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        let older_than = match r.older_than_secs {
            0 => Duration::from_secs(self.inner.config.keep_jobs_secs),
            secs => Duration::from_secs(secs),
        };
        let count = self.purge_jobs(&instance, older_than, &r.workers).await?;
        Ok(Response::new(pb::CountAnswer { count }))
    }

    async fn clean_jobs(&self, request: Request<pb::CleanJobsRequest>) -> Result<Response<pb::CountAnswer>, Status> {
        let instance = self.scope(request.into_inner().scope)?.instance;
        let count = self.clean_jobs(&instance).await?;
        Ok(Response::new(pb::CountAnswer { count }))
    }

    async fn create_trigger(
        &self,
        request: Request<pb::CreateTriggerRequest>,
    ) -> Result<Response<pb::TriggerAnswer>, Status> {
        let r = request.into_inner();
        let Caller {
            instance,
            trusted,
            domain,
        } = self.scope(r.scope)?;
        let new = NewTrigger {
            kind: r.r#type,
            arguments: r.arguments,
            worker: r.worker,
            message: r.message,
            debounce: r.debounce,
            has_options: r.has_options,
            max_exec_count: r.max_exec_count,
            timeout_ns: r.timeout_ns,
        };
        let trigger = self.create_trigger(&instance, &domain, new, trusted).await?;
        Ok(Response::new(self.trigger_answer(&instance, trigger).await?))
    }

    async fn get_trigger(&self, request: Request<pb::TriggerRequest>) -> Result<Response<pb::TriggerAnswer>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        let trigger = self.get_trigger(&instance, &r.id).await?;
        Ok(Response::new(self.trigger_answer(&instance, trigger).await?))
    }

    async fn list_triggers(
        &self,
        request: Request<pb::ListTriggersRequest>,
    ) -> Result<Response<pb::TriggerList>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        let mut triggers = Vec::new();
        for trigger in self.list_triggers(&instance, &r.workers, &r.types).await? {
            triggers.push(self.trigger_answer(&instance, trigger).await?);
        }
        Ok(Response::new(pb::TriggerList { triggers }))
    }

    async fn patch_trigger(
        &self,
        request: Request<pb::PatchTriggerRequest>,
    ) -> Result<Response<pb::TriggerAnswer>, Status> {
        let r = request.into_inner();
        let Caller { instance, trusted, .. } = self.scope(r.scope)?;
        let trigger = self
            .patch_trigger(&instance, &r.id, r.arguments, r.message, trusted)
            .await?;
        Ok(Response::new(self.trigger_answer(&instance, trigger).await?))
    }

    async fn delete_trigger(
        &self,
        request: Request<pb::TriggerRequest>,
    ) -> Result<Response<pb::DeleteTriggerResponse>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        self.delete_trigger(&instance, &r.id).await?;
        Ok(Response::new(pb::DeleteTriggerResponse {}))
    }

    async fn trigger_jobs(&self, request: Request<pb::TriggerJobsRequest>) -> Result<Response<pb::JobList>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        self.get_trigger(&instance, &r.id).await?;
        let limit = match r.limit {
            0 => 50,
            n => n.min(1000) as usize,
        };
        let jobs = self.trigger_jobs(&instance, &r.id, limit).await?;
        Ok(Response::new(pb::JobList { jobs }))
    }

    async fn launch_trigger(&self, request: Request<pb::TriggerRequest>) -> Result<Response<pb::JobAnswer>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        Ok(job(self.launch_trigger(&instance, &r.id).await?))
    }

    async fn call_webhook(
        &self,
        request: Request<pb::WebhookRequest>,
    ) -> Result<Response<pb::WebhookResponse>, Status> {
        let r = request.into_inner();
        if r.instance.is_empty() {
            return Err(JobsError::BadRequest("missing instance".into()).into());
        }
        self.call_webhook(&r.instance, &r.trigger_id, r.payload, r.manual)
            .await?;
        Ok(Response::new(pb::WebhookResponse {}))
    }

    async fn install_konnector(
        &self,
        request: Request<pb::InstallKonnectorRequest>,
    ) -> Result<Response<pb::KonnectorAnswer>, Status> {
        let r = request.into_inner();
        let caller = self.scope(r.scope)?;
        let konnector = self
            .install_konnector(&caller.instance, &caller.domain, &r.slug, &r.source, caller.trusted)
            .await?;
        Ok(Response::new(pb::KonnectorAnswer {
            konnector: Some(konnector),
        }))
    }

    async fn list_konnectors(
        &self,
        request: Request<pb::ListKonnectorsRequest>,
    ) -> Result<Response<pb::KonnectorList>, Status> {
        let instance = self.scope(request.into_inner().scope)?.instance;
        let konnectors = self.list_konnectors(&instance).await?;
        Ok(Response::new(pb::KonnectorList { konnectors }))
    }

    async fn uninstall_konnector(
        &self,
        request: Request<pb::KonnectorRequest>,
    ) -> Result<Response<pb::UninstallKonnectorResponse>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        self.uninstall_konnector(&instance, &r.slug).await?;
        Ok(Response::new(pb::UninstallKonnectorResponse {}))
    }

    async fn install_app(&self, request: Request<pb::InstallAppRequest>) -> Result<Response<pb::AppAnswer>, Status> {
        let r = request.into_inner();
        let caller = self.scope(r.scope)?;
        let by = caller.installer(&r.caller_app);
        let app = self.install_app(&by, &r.slug, &r.source, r.update).await?;
        Ok(Response::new(pb::AppAnswer { app: Some(app) }))
    }

    type InstallAppWatchedStream = futures::stream::BoxStream<'static, Result<pb::InstallAppEvent, Status>>;

    async fn install_app_watched(
        &self,
        request: Request<pb::InstallAppRequest>,
    ) -> Result<Response<Self::InstallAppWatchedStream>, Status> {
        use futures::StreamExt;
        use pb::install_app_event::Event;
        let r = request.into_inner();
        let caller = self.scope(r.scope)?;
        let (progress, watched) = tokio::sync::watch::channel((0u64, 0u64));
        let svc = self.clone();
        // The installation goes on if the caller goes away: it is a change like any other.
        let installing = tokio::spawn(async move {
            let by = caller.installer(&r.caller_app);
            svc.install_app_watched(&by, &r.slug, &r.source, r.update, Some(&progress))
                .await
        });
        let ended =
            |result: std::result::Result<Result<cocon_proto::events::v1::Webapp>, tokio::task::JoinError>| match result
            {
                Ok(Ok(app)) => Ok(pb::InstallAppEvent {
                    event: Some(Event::App(app)),
                }),
                Ok(Err(err)) => Err(Status::from(err)),
                Err(e) => Err(Status::internal(format!("the installation failed: {e}"))),
            };
        // The progress first (its last value too, once the installation is over), then the end.
        let events = futures::stream::unfold(
            (Some(watched), Some(installing)),
            move |(mut watched, installing)| async move {
                let mut installing = installing?;
                while let Some(w) = watched.as_mut() {
                    tokio::select! {
                        biased;
                        changed = w.changed() => match changed {
                            Ok(()) => {
                                let (received, total) = *w.borrow_and_update();
                                let event = pb::InstallAppEvent {
                                    event: Some(Event::Downloaded(pb::Downloaded { received, total })),
                                };
                                return Some((Ok(event), (watched, Some(installing))));
                            }
                            Err(_) => watched = None,
                        },
                        result = &mut installing => return Some((ended(result), (None, None))),
                    }
                }
                let result = installing.await;
                Some((ended(result), (None, None)))
            },
        );
        Ok(Response::new(events.boxed()))
    }

    async fn list_apps(&self, request: Request<pb::ListAppsRequest>) -> Result<Response<pb::AppList>, Status> {
        let instance = self.scope(request.into_inner().scope)?.instance;
        let apps = self.list_apps(&instance).await?;
        Ok(Response::new(pb::AppList { apps }))
    }

    async fn get_app(&self, request: Request<pb::AppRequest>) -> Result<Response<pb::AppAnswer>, Status> {
        let r = request.into_inner();
        let instance = self.scope(r.scope)?.instance;
        let app = self.get_app(&instance, &r.slug).await?;
        Ok(Response::new(pb::AppAnswer { app: Some(app) }))
    }

    async fn uninstall_app(
        &self,
        request: Request<pb::AppRequest>,
    ) -> Result<Response<pb::UninstallAppResponse>, Status> {
        let r = request.into_inner();
        let caller = self.scope(r.scope)?;
        let by = caller.installer(&r.caller_app);
        self.uninstall_app(&by, &r.slug).await?;
        Ok(Response::new(pb::UninstallAppResponse {}))
    }

    async fn app_for_serving(
        &self,
        request: Request<pb::AppForServingRequest>,
    ) -> Result<Response<pb::AppAnswer>, Status> {
        let r = request.into_inner();
        if r.instance.is_empty() {
            return Err(JobsError::BadRequest("missing instance".into()).into());
        }
        let app = self.get_app(&r.instance, &r.slug).await?;
        Ok(Response::new(pb::AppAnswer { app: Some(app) }))
    }

    async fn read_app_file(&self, request: Request<pb::AppFileRequest>) -> Result<Response<pb::AppFile>, Status> {
        let r = request.into_inner();
        let content = self.read_app_file(&r.code, &r.path).await?;
        Ok(Response::new(pb::AppFile {
            content: content.into(),
        }))
    }

    async fn start_run(&self, request: Request<pb::StartRunRequest>) -> Result<Response<pb::StartRunResponse>, Status> {
        let r = request.into_inner();
        let instance = self.runner_scope(r.scope)?;
        let reply = match self.start(&instance, &r.job_id).await? {
            Start::Run(started) => pb::StartRunResponse {
                job: Some(started.job),
                konnector: started.konnector,
                app: started.app,
                check_again_ms: 0,
            },
            Start::Skip => pb::StartRunResponse::default(),
            Start::Later(delay) => pb::StartRunResponse {
                check_again_ms: delay.as_millis().max(1) as u64,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn end_run(&self, request: Request<pb::EndRunRequest>) -> Result<Response<pb::EndRunResponse>, Status> {
        let r = request.into_inner();
        let instance = self.runner_scope(r.scope)?;
        let job = r.job.ok_or_else(|| JobsError::BadRequest("missing job".into()))?;
        // Only the run that started last ends it (checked as the end commits, `committer.rs`).
        let error = (!r.error.is_empty()).then_some(r.error);
        self.end(&instance, job, error, r.retry).await?;
        Ok(Response::new(pb::EndRunResponse {}))
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let workers = self
            .inner
            .workers
            .all()
            .map(|w| pb::Worker {
                name: w.name.to_string(),
                reserved: w.reserved,
                max_exec_count: w.max_exec_count,
                timeout_ms: w.timeout.as_millis() as u64,
                concurrency: w.concurrency,
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }
}
