//! The services as their callers see them: through their gRPC trait, either directly when the
//! service runs in this process (same proto messages, same handler code, no HTTP/2 framing and
//! no protobuf encoding: about a seventh of a small read's CPU), or through a tonic client over
//! a [`GrpcChannel`] when it runs elsewhere. Both answer `Result<tonic::Response<_>, Status>`.

use std::sync::Arc;

use cocon_proto::auth::v1 as auth_pb;
use cocon_proto::auth::v1::auth_service_client::AuthServiceClient;
use cocon_proto::auth::v1::auth_service_server::AuthService;
use cocon_proto::documents::v1 as docs_pb;
use cocon_proto::documents::v1::documents_service_client::DocumentsServiceClient;
use cocon_proto::documents::v1::documents_service_server::DocumentsService;
use cocon_proto::jobs::v1 as jobs_pb;
use cocon_proto::jobs::v1::jobs_service_client::JobsServiceClient;
use cocon_proto::jobs::v1::jobs_service_server::JobsService;
use cocon_proto::notifications::v1 as notifications_pb;
use cocon_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use cocon_proto::notifications::v1::notifications_service_server::NotificationsService;
use cocon_proto::sharing::v1 as sharing_pb;
use cocon_proto::sharing::v1::sharing_service_client::SharingServiceClient;
use cocon_proto::sharing::v1::sharing_service_server::SharingService;

use crate::GrpcChannel;

use cocon_proto::files::v1 as files_pb;
use cocon_proto::files::v1::files_service_client::FilesServiceClient;

/// A request that names the instance it is for: routed to the holder of the instance's shard
/// when the callee's replicas own shards ([`crate::Route::follow_shards`]).
pub trait Instanced {
    /// The instance's id; empty when the request names none.
    fn instance(&self) -> &str;
}

macro_rules! instanced {
    ($pb:ident { $($req:ident),* $(,)? }) => {
        $(impl Instanced for $pb::$req {
            fn instance(&self) -> &str {
                self.scope.as_ref().map_or("", |s| s.instance.as_str())
            }
        })*
    };
}

instanced!(docs_pb {
    GetDocumentRequest,
    PutDocumentRequest,
    DeleteDocumentRequest,
    BulkDocsRequest,
    AllDocsRequest,
    NormalDocsRequest,
    CreateIndexRequest,
    FindRequest,
    ChangesRequest,
    DesignDocsRequest,
    DeleteDesignDocRequest,
    BodyRequest,
    DoctypeInfoRequest,
});
instanced!(notifications_pb { CreateRequest });
instanced!(files_pb {
    CreateDirectoryRequest,
    GetFileRequest,
    DownloadRequest,
    PatchFileRequest,
    FileRequest,
    CreateLinkRequest,
    ArchiveRequest,
    ThumbnailRequest,
    DiskUsageRequest,
    VersionRequest,
    CopyFileRequest,
    ReferenceRequest,
    ReferencedRequest,
    PropertiesRequest,
    ChangesRequest,
    FindRequest,
    AvatarRequest,
    UploadHeader,
    UploadRequest,
    SetQuotaRequest,
});

impl Instanced for docs_pb::AllDoctypesRequest {
    fn instance(&self) -> &str {
        &self.instance
    }
}

/// The calls of a client whose service does not route by instance name none.
fn no_instance<T>(_: &T) -> &str {
    ""
}

fn instance_of<T: Instanced>(req: &T) -> &str {
    req.instance()
}

/// The request, with the instance it is for in its metadata (a replica that does not hold the
/// instance's shard refuses it, whether or not the caller follows the shards), and the replica
/// it must go to when a retry knows it.
fn keyed<T>(req: T, key: fn(&T) -> &str, to: Option<&str>) -> tonic::Request<T> {
    let metadata = naming(key(&req), to);
    tonic::Request::from_parts(metadata, tonic::Extensions::default(), req)
}

/// A request for `instance` (a streamed one, whose caller names its instance).
fn named<T>(message: T, instance: &str, to: Option<&str>) -> tonic::Request<T> {
    tonic::Request::from_parts(naming(instance, to), tonic::Extensions::default(), message)
}

/// The metadata naming `instance` (when not empty) and the replica `to` send the call to
/// (when a retry knows it).
fn naming(instance: &str, to: Option<&str>) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if !instance.is_empty()
        && let Ok(value) = instance.parse()
    {
        metadata.insert(crate::INSTANCE_HEADER, value);
    }
    if let Some(to) = to
        && let Ok(value) = to.parse()
    {
        metadata.insert(crate::route::TO_HEADER, value);
    }
    metadata
}

/// How a failed call is sent again, if it is.
enum Retry {
    /// Its replica refused the connection: another one, now.
    Elsewhere,
    /// Its replica does not hold the instance's shard: the holder it named.
    To(String),
    /// Its shard is being handed over: in a moment.
    Later,
}

/// Tries per call, all causes together. A shard being handed over is waited for with a
/// growing pause (40 ms, doubled up to 200 ms), for up to [`HANDOVER_BUDGET`] in all: a
/// graceful hand-over lasts a few round trips to NATS, more under load.
const MAX_TRIES: u32 = 24;
const HANDOVER_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// The pause before the `tries`-th try of a call refused during a hand-over.
fn handover_wait(tries: u32) -> std::time::Duration {
    std::time::Duration::from_millis((10u64 << tries.min(5)).min(200))
}

/// Whether a call that failed with `status` (its `tries`-th try, the first sent at `since`)
/// is sent again, and how. Each of these failures happened before the call ran.
fn retry(status: &tonic::Status, tries: u32, since: std::time::Instant) -> Option<Retry> {
    if tries >= MAX_TRIES || since.elapsed() >= HANDOVER_BUDGET {
        return None;
    }
    if crate::not_sent(status) {
        return (tries == 1).then_some(Retry::Elsewhere);
    }
    let meta = status.metadata();
    match status.code() {
        tonic::Code::FailedPrecondition => meta
            .get(crate::OWNER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|owner| Retry::To(owner.to_string())),
        tonic::Code::Unavailable if meta.contains_key(crate::HANDOVER_HEADER) => Some(Retry::Later),
        _ => None,
    }
}

/// Where a refused call goes next (`None`: wherever the route sends it), after the pause a
/// hand-over or a holder this process no longer lists (dead, its shards not taken yet) calls
/// for.
async fn next_try(route: &crate::Route, how: Retry, tries: u32) -> Option<String> {
    match how {
        Retry::To(owner) if route.knows(&owner) => Some(owner),
        Retry::To(_) | Retry::Later => {
            tokio::time::sleep(handover_wait(tries)).await;
            None
        }
        Retry::Elsewhere => None,
    }
}

/// Sends `req` through `call`, and again when it did not run (refused before it was sent, or
/// by a replica not holding its instance's shard): to the holder named, or after a pause
/// during a hand-over. The copy is made only when there is somewhere to send it again.
async fn resend<Req, Resp, F, Fut>(
    route: &crate::Route,
    req: Req,
    key: fn(&Req) -> &str,
    call: F,
) -> Result<tonic::Response<Resp>, tonic::Status>
where
    Req: Clone,
    F: Fn(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    if !route.has_spare() {
        return call(keyed(req, key, None)).await;
    }
    let again = req.clone();
    let mut outcome = call(keyed(req, key, None)).await;
    let mut tries = 1;
    let since = std::time::Instant::now();
    while let Err(status) = &outcome {
        let Some(how) = retry(status, tries, since) else { break };
        tries += 1;
        metrics::counter!("cocon_mesh_resent_total", "service" => route.service()).increment(1);
        let to = next_try(route, how, tries).await;
        outcome = call(keyed(again.clone(), key, to.as_deref())).await;
    }
    outcome
}

macro_rules! service_client {
    ($(#[$doc:meta])* $name:ident, $service:path, $client:ident, $pb:ident { $($method:ident($req:ident) -> $resp:ident;)* }) => {
        service_client!($(#[$doc])* $name, $service, $client, $pb, no_instance { $($method($req) -> $resp;)* });
    };
    ($(#[$doc:meta])* $name:ident, $service:path, $client:ident, $pb:ident, $key:ident { $($method:ident($req:ident) -> $resp:ident;)* }) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub enum $name {
            Local(Arc<dyn $service>),
            /// A tonic client over the route, and the route (to know whether a refused call
            /// has another replica to go to).
            Remote($client<GrpcChannel>, crate::Route),
        }

        impl $name {
            $(
                pub async fn $method(&mut self, req: $pb::$req) -> Result<tonic::Response<$pb::$resp>, tonic::Status> {
                    match self {
                        $name::Local(service) => service.$method(tonic::Request::new(req)).await,
                        $name::Remote(client, route) => {
                            let client = client.clone();
                            resend(route, req, $key, move |req| {
                                let mut client = client.clone();
                                async move { client.$method(req).await }
                            })
                            .await
                        }
                    }
                }
            )*
        }
    };
}

service_client!(
    /// The auth service.
    AuthClient, AuthService, AuthServiceClient, auth_pb {
        create_instance(CreateInstanceRequest) -> Instance;
        create_instances(CreateInstancesRequest) -> CreateInstancesResponse;
        get_instance(GetInstanceRequest) -> Instance;
        list_instances(ListInstancesRequest) -> ListInstancesResponse;
        destroy_instance(DestroyInstanceRequest) -> DestroyInstanceResponse;
        set_disk_quota(SetDiskQuotaRequest) -> Instance;
        update_settings(UpdateSettingsRequest) -> Instance;
        issue_token(IssueTokenRequest) -> IssueTokenResponse;
        list_cli_tokens(ListCliTokensRequest) -> ListCliTokensResponse;
        revoke_cli_token(RevokeCliTokenRequest) -> RevokeCliTokenResponse;
        authenticate(AuthenticateRequest) -> AuthenticateResponse;
        issue_onboarding(IssueOnboardingRequest) -> IssueOnboardingResponse;
        prelogin(PreloginRequest) -> PreloginResponse;
        set_passphrase(SetPassphraseRequest) -> SetPassphraseResponse;
        login(LoginRequest) -> LoginResponse;
        logout(LogoutRequest) -> LogoutResponse;
        list_sessions(ListSessionsRequest) -> ListSessionsResponse;
        login_two_factor(LoginTwoFactorRequest) -> LoginResponse;
        get_two_factor(GetTwoFactorRequest) -> TwoFactorStatus;
        propose_two_factor(GetTwoFactorRequest) -> ProposeTwoFactorResponse;
        enable_two_factor(EnableTwoFactorRequest) -> EnableTwoFactorResponse;
        issue_session_code(IssueSessionCodeRequest) -> SessionCode;
        redeem_session_code(RedeemSessionCodeRequest) -> Session;
        start_oidc(StartOidcRequest) -> StartOidcResponse;
        oidc_return(OidcReturnRequest) -> OidcReturnResponse;
        login_oidc(LoginOidcRequest) -> LoginOidcResponse;
        disable_two_factor(DisableTwoFactorRequest) -> TwoFactorStatus;
        register_client(RegisterClientRequest) -> ClientAnswer;
        manage_client(ManageClientRequest) -> ClientAnswer;
        list_clients(ListClientsRequest) -> ListClientsResponse;
        revoke_client(RevokeClientRequest) -> RevokeClientResponse;
        check_authorization(AuthorizationRequest) -> ClientAnswer;
        issue_code(AuthorizationRequest) -> IssueCodeResponse;
        exchange_token(TokenRequest) -> TokenResponse;
        oidc_access_token(OidcTokenRequest) -> TokenResponse;
        login_jwt(LoginJwtRequest) -> LoginResponse;
        create_permission(CreatePermissionRequest) -> PermissionAnswer;
        get_permission(PermissionRequest) -> PermissionAnswer;
        patch_permission(PatchPermissionRequest) -> PermissionAnswer;
        delete_permission(PermissionRequest) -> DeletePermissionResponse;
        list_shared_by_link(ListSharedByLinkRequest) -> ListPermissionsResponse;
        unlock_share(UnlockShareRequest) -> UnlockShareResponse;
        check_grantor(CheckGrantorRequest) -> CheckGrantorResponse;
        set_app_permissions(SetAppPermissionsRequest) -> SetAppPermissionsResponse;
        issue_sharing_client(IssueSharingClientRequest) -> SharingClientAnswer;
    }
);

service_client!(
    /// The documents service.
    DocumentsClient, DocumentsService, DocumentsServiceClient, docs_pb, instance_of {
        get_document(GetDocumentRequest) -> JsonResponse;
        put_document(PutDocumentRequest) -> WriteResponse;
        delete_document(DeleteDocumentRequest) -> WriteResponse;
        bulk_docs(BulkDocsRequest) -> JsonResponse;
        all_docs(AllDocsRequest) -> JsonResponse;
        normal_docs(NormalDocsRequest) -> JsonResponse;
        create_index(CreateIndexRequest) -> JsonResponse;
        find(FindRequest) -> JsonResponse;
        changes(ChangesRequest) -> JsonResponse;
        design_docs(DesignDocsRequest) -> JsonResponse;
        delete_design_doc(DeleteDesignDocRequest) -> JsonResponse;
        all_doctypes(AllDoctypesRequest) -> JsonResponse;
        revs_diff(BodyRequest) -> JsonResponse;
        bulk_get(BodyRequest) -> JsonResponse;
        get_local(GetDocumentRequest) -> JsonResponse;
        put_local(PutDocumentRequest) -> WriteResponse;
        doctype_info(DoctypeInfoRequest) -> JsonResponse;
    }
);

service_client!(
    /// The jobs service.
    JobsClient, LocalJobs, JobsServiceClient, jobs_pb {
        push_job(PushJobRequest) -> JobAnswer;
        get_job(JobRequest) -> JobAnswer;
        wait_job(WaitJobRequest) -> JobAnswer;
        list_queue(ListQueueRequest) -> JobList;
        patch_job(PatchJobRequest) -> JobAnswer;
        purge_jobs(PurgeJobsRequest) -> CountAnswer;
        clean_jobs(CleanJobsRequest) -> CountAnswer;
        create_trigger(CreateTriggerRequest) -> TriggerAnswer;
        get_trigger(TriggerRequest) -> TriggerAnswer;
        list_triggers(ListTriggersRequest) -> TriggerList;
        patch_trigger(PatchTriggerRequest) -> TriggerAnswer;
        delete_trigger(TriggerRequest) -> DeleteTriggerResponse;
        trigger_jobs(TriggerJobsRequest) -> JobList;
        launch_trigger(TriggerRequest) -> JobAnswer;
        call_webhook(WebhookRequest) -> WebhookResponse;
        list_workers(ListWorkersRequest) -> ListWorkersResponse;
        install_konnector(InstallKonnectorRequest) -> KonnectorAnswer;
        list_konnectors(ListKonnectorsRequest) -> KonnectorList;
        uninstall_konnector(KonnectorRequest) -> UninstallKonnectorResponse;
        install_app(InstallAppRequest) -> AppAnswer;
        list_apps(ListAppsRequest) -> AppList;
        get_app(AppRequest) -> AppAnswer;
        uninstall_app(AppRequest) -> UninstallAppResponse;
        read_app_file(AppFileRequest) -> AppFile;
        app_for_serving(AppForServingRequest) -> AppAnswer;
        start_run(StartRunRequest) -> StartRunResponse;
        end_run(EndRunRequest) -> EndRunResponse;
    }
);

/// An installation's events as the jobs service streams them (`InstallAppWatched`).
pub type InstallEvents = futures::stream::BoxStream<'static, Result<jobs_pb::InstallAppEvent, tonic::Status>>;

/// The jobs service as this process runs it: its streams are boxed.
pub trait LocalJobs: JobsService<InstallAppWatchedStream = InstallEvents> {}

impl<T: JobsService<InstallAppWatchedStream = InstallEvents>> LocalJobs for T {}

impl JobsClient {
    /// Installs or updates an app, with its download's progress as it goes, then the app.
    pub async fn install_app_watched(
        &mut self,
        req: jobs_pb::InstallAppRequest,
    ) -> Result<tonic::Response<InstallEvents>, tonic::Status> {
        use futures::StreamExt;
        match self {
            JobsClient::Local(service) => service.install_app_watched(tonic::Request::new(req)).await,
            JobsClient::Remote(client, _) => Ok(client.install_app_watched(req).await?.map(|s| s.boxed())),
        }
    }
}

service_client!(
    /// The notifications service.
    NotificationsClient, NotificationsService, NotificationsServiceClient, notifications_pb, instance_of {
        create(CreateRequest) -> CreateResponse;
    }
);

service_client!(
    /// The sharing service.
    SharingClient, SharingService, SharingServiceClient, sharing_pb {
        create_sharing(CreateSharingRequest) -> SharingAnswer;
        get_sharing(GetSharingRequest) -> SharingAnswer;
        list_sharings(ListSharingsRequest) -> SharingList;
        receive_request(ReceiveRequestRequest) -> SharingAnswer;
        get_request(ConsentRequest) -> SharingAnswer;
        accept(ConsentRequest) -> AcceptAnswer;
        receive_answer(ReceiveAnswerRequest) -> JsonAnswer;
        discover(DiscoverRequest) -> DiscoverAnswer;
        revs_diff(PeerRequest) -> JsonAnswer;
        bulk_docs(PeerRequest) -> JsonAnswer;
        peer_file_metadata(PeerRequest) -> JsonAnswer;
        claim_file_content(PeerRequest) -> ClaimedFile;
        file_content_stored(PeerRequest) -> JsonAnswer;
        revoke(RevokeRequest) -> SharingAnswer;
        peer_revoked(PeerRequest) -> JsonAnswer;
        peer_end_initial(PeerRequest) -> JsonAnswer;
        set_read_only(ReadOnlyRequest) -> SharingAnswer;
        peer_read_only(PeerRequest) -> JsonAnswer;
        add_recipients(AddRecipientsRequest) -> SharingAnswer;
        peer_add_recipients(PeerRequest) -> JsonAnswer;
        peer_members(PeerRequest) -> JsonAnswer;
        news(NewsRequest) -> NewsAnswer;
        read_only_guards(GuardsRequest) -> Guards;
        set_class_groups(ClassGroupsRequest) -> ClassGroupsAnswer;
    }
);

/// The files service, always through gRPC's framing (in process or not): uploads and
/// downloads stream. Each call names its instance in its metadata, as the other clients'
/// do; a call with a streamed body (an upload) is given its instance by the caller, and is
/// sent again when refused before it ran as long as what it sent was kept ([`REPLAY_MAX`]).
#[derive(Clone)]
pub struct FilesClient {
    client: FilesServiceClient<GrpcChannel>,
    /// The route, when the service runs elsewhere.
    route: Option<crate::Route>,
}

impl FilesClient {
    pub(crate) fn new(channel: GrpcChannel, route: Option<crate::Route>) -> FilesClient {
        FilesClient {
            client: FilesServiceClient::new(channel),
            route,
        }
    }
}

/// At most this much of a streamed request is kept to send it again. A refusal comes before
/// the replica reads the body, so only what the server's HTTP/2 stream window (1 MiB) and the
/// client's send buffer let through was sent; a request past this much was read, so accepted,
/// and what was kept is let go at once instead of being held until the call ends.
const REPLAY_MAX: usize = 2 << 20;

/// The messages of a streamed request, kept as they are sent (up to [`REPLAY_MAX`] bytes), so
/// that a call refused before it ran is sent again from its start. Each try reads through its
/// own [`Replay`]; a new try ends the earlier one's stream.
struct ReplayState<T, S> {
    source: std::pin::Pin<Box<S>>,
    sent: Vec<T>,
    bytes: usize,
    /// Past [`REPLAY_MAX`] (or not kept at all): the request cannot be sent again.
    spent: bool,
    try_no: u64,
}

struct Replay<T, S> {
    state: Arc<std::sync::Mutex<ReplayState<T, S>>>,
    try_no: u64,
    /// The next kept message this try sends.
    at: usize,
}

impl<T, S> futures::Stream for Replay<T, S>
where
    T: prost::Message + Clone,
    S: futures::Stream<Item = T>,
{
    type Item = T;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        let this = self.get_mut();
        let mut state = this.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.try_no != this.try_no {
            return std::task::Poll::Ready(None);
        }
        if this.at < state.sent.len() {
            this.at += 1;
            return std::task::Poll::Ready(Some(state.sent[this.at - 1].clone()));
        }
        let polled = state.source.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(item)) = &polled
            && !state.spent
        {
            state.bytes += item.encoded_len();
            if state.bytes > REPLAY_MAX {
                state.spent = true;
                state.sent = Vec::new();
            } else {
                state.sent.push(item.clone());
                this.at += 1;
            }
        }
        polled
    }
}

/// [`resend`] for a streamed request: sent again from its start (what it sent is kept) when
/// refused before it ran, while it sent no more than [`REPLAY_MAX`].
async fn resend_streamed<T, S, Resp, F, Fut>(
    route: &crate::Route,
    instance: &str,
    parts: S,
    call: F,
) -> Result<tonic::Response<Resp>, tonic::Status>
where
    T: prost::Message + Clone,
    S: futures::Stream<Item = T>,
    F: Fn(tonic::Request<Replay<T, S>>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let state = Arc::new(std::sync::Mutex::new(ReplayState {
        source: Box::pin(parts),
        sent: Vec::new(),
        bytes: 0,
        spent: false,
        try_no: 0,
    }));
    let mut tries = 1;
    let since = std::time::Instant::now();
    let mut to = None::<String>;
    loop {
        let try_no = tries as u64;
        state.lock().unwrap_or_else(|e| e.into_inner()).try_no = try_no;
        let parts = Replay {
            state: state.clone(),
            try_no,
            at: 0,
        };
        let outcome = call(named(parts, instance, to.as_deref())).await;
        let Err(status) = &outcome else {
            return outcome;
        };
        let Some(how) = retry(status, tries, since) else {
            return outcome;
        };
        if state.lock().unwrap_or_else(|e| e.into_inner()).spent {
            return outcome;
        }
        tries += 1;
        metrics::counter!("cocon_mesh_resent_total", "service" => route.service()).increment(1);
        to = next_try(route, how, tries).await;
    }
}

macro_rules! files_calls {
    ($($method:ident($req:ident) -> $resp:ty;)*) => {
        impl FilesClient {
            $(
                pub async fn $method(&mut self, req: files_pb::$req) -> Result<tonic::Response<$resp>, tonic::Status> {
                    match &self.route {
                        None => self.client.$method(keyed(req, instance_of, None)).await,
                        Some(route) => {
                            let client = self.client.clone();
                            resend(route, req, instance_of, move |req| {
                                let mut client = client.clone();
                                async move { client.$method(req).await }
                            })
                            .await
                        }
                    }
                }
            )*
        }
    };
}

files_calls!(
    create_directory(CreateDirectoryRequest) -> files_pb::FileAnswer;
    get_file(GetFileRequest) -> files_pb::FileAnswer;
    download(DownloadRequest) -> tonic::Streaming<files_pb::DownloadPart>;
    patch_file(PatchFileRequest) -> files_pb::FileAnswer;
    trash_file(FileRequest) -> files_pb::FileAnswer;
    restore_file(FileRequest) -> files_pb::FileAnswer;
    destroy_file(FileRequest) -> files_pb::DestroyResponse;
    create_link(CreateLinkRequest) -> files_pb::LinkAnswer;
    archive(ArchiveRequest) -> tonic::Streaming<files_pb::DownloadPart>;
    thumbnail(ThumbnailRequest) -> tonic::Streaming<files_pb::DownloadPart>;
    empty_trash(DiskUsageRequest) -> files_pb::EmptyTrashResponse;
    revert_file(VersionRequest) -> files_pb::FileAnswer;
    delete_versions(VersionRequest) -> files_pb::FileAnswer;
    copy_file(CopyFileRequest) -> files_pb::FileAnswer;
    reference(ReferenceRequest) -> files_pb::FileAnswer;
    referenced(ReferencedRequest) -> files_pb::FileAnswer;
    set_properties(PropertiesRequest) -> files_pb::FileAnswer;
    changes(ChangesRequest) -> files_pb::ChangesAnswer;
    find(FindRequest) -> files_pb::FindAnswer;
    disk_usage(DiskUsageRequest) -> files_pb::DiskUsageAnswer;
    set_quota(SetQuotaRequest) -> files_pb::SetQuotaResponse;
    set_avatar(AvatarRequest) -> files_pb::Avatar;
    get_avatar(DiskUsageRequest) -> files_pb::Avatar;
    delete_avatar(DiskUsageRequest) -> files_pb::Avatar;
    create_upload(UploadHeader) -> files_pb::UploadState;
    get_upload(UploadRequest) -> files_pb::UploadState;
    cancel_upload(UploadRequest) -> files_pb::UploadState;
);

/// The calls whose request streams: each is given its instance by its caller. In process, or
/// with nowhere to send it again, the stream goes as it is; otherwise through a [`Replay`].
macro_rules! files_streams {
    ($($(#[$doc:meta])* $method:ident($part:ident) -> $resp:ident;)*) => {
        impl FilesClient {
            $(
                $(#[$doc])*
                pub async fn $method(
                    &mut self,
                    instance: &str,
                    parts: impl futures::Stream<Item = files_pb::$part> + Send + 'static,
                ) -> Result<tonic::Response<files_pb::$resp>, tonic::Status> {
                    match self.route.as_ref().filter(|r| r.has_spare()) {
                        None => self.client.$method(named(parts, instance, None)).await,
                        Some(route) => {
                            let client = self.client.clone();
                            resend_streamed(route, instance, parts, move |req| {
                                let mut client = client.clone();
                                async move { client.$method(req).await }
                            })
                            .await
                        }
                    }
                }
            )*
        }
    };
}

files_streams!(
    /// Uploads a file of `instance`: its header, then its content.
    upload(UploadPart) -> FileAnswer;
    /// Appends to a resumable upload of `instance`.
    append_upload(AppendPart) -> UploadState;
    /// Writes a file a sharing brings to `instance`.
    put_shared(SharedPart) -> FileAnswer;
);
