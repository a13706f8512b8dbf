//! The gRPC face of the service: requests in, CouchDB-shaped JSON out.

use std::time::Duration;

use bytes::Bytes;
use cocon_proto::documents::v1 as pb;
use serde_json::{Map, Value, json};
use tonic::{Request, Response, Status};

use crate::body::{self, Fields};
use crate::committer::{ReadOnly, WriteCmd, WriteKind};
use crate::query::{self, AllDocsParams, ChangesParams};
use crate::replication::{self, ReadOptions};
use crate::{DocumentsError, DocumentsService, error::Result, validate};

impl DocumentsService {
    /// The instance a call is for, once its ticket shows the auth service accepted a token of
    /// that very instance (defence in depth: the gateway checked it already).
    fn instance_of(&self, instance: &str, ticket: &str) -> Result<()> {
        if instance.is_empty() {
            return Err(DocumentsError::BadRequest("missing instance".into()));
        }
        self.mesh_key
            .verify(instance, ticket, cocon_common::time::now_secs())
            .map_err(|e| match e {
                cocon_common::ticket::TicketError::Expired => DocumentsError::Expired,
                other => DocumentsError::Denied(other.to_string()),
            })
    }

    fn scope(&self, s: Option<pb::Scope>) -> Result<pb::Scope> {
        let s = s.ok_or_else(|| DocumentsError::BadRequest("missing scope".into()))?;
        self.instance_of(&s.instance, &s.ticket)?;
        validate::doctype(&s.doctype)?;
        Ok(s)
    }
}

impl DocumentsService {
    fn vault(&self, instance: &str) -> crate::accounts::Vault {
        crate::accounts::Vault::new(&self.mesh_key, instance)
    }

    /// Seals an account's secrets in a body about to be written (`accounts.rs`).
    fn seal_account(&self, instance: &str, doctype: &str, json: &mut Vec<u8>) {
        if doctype == crate::accounts::DOCTYPE
            && let Some(sealed) = crate::accounts::seal_body(&self.vault(instance), json)
        {
            *json = serde_json::to_vec(&sealed).expect("a JSON map serialises");
        }
    }

    /// An account's stored JSON with its credentials opened, for a konnector.
    fn open_account(&self, instance: &str, doctype: &str, json: Bytes) -> Bytes {
        if doctype != crate::accounts::DOCTYPE {
            return json;
        }
        match serde_json::from_slice::<Map<String, Value>>(&json) {
            Ok(mut doc) => {
                self.vault(instance).open(&mut doc);
                Bytes::from(serde_json::to_vec(&doc).expect("a JSON map serialises"))
            }
            Err(_) => json,
        }
    }
}

/// The read-only rules a call carries, shared by its commands.
fn read_only(s: &pb::Scope) -> ReadOnly {
    (!s.read_only.is_empty()).then(|| std::sync::Arc::new(s.read_only.clone()))
}

fn json(bytes: Bytes) -> Response<pb::JsonResponse> {
    Response::new(pb::JsonResponse { json: bytes })
}

fn error_json(id: &str, err: &DocumentsError) -> Value {
    use cocon_common::ServiceError;
    json!({"id": id, "error": err.error_name(), "reason": err.public_message()})
}

impl DocumentsService {
    async fn write_one(
        &self,
        instance: &str,
        doctype: &str,
        kind: WriteKind,
        read_only: ReadOnly,
    ) -> Result<pb::WriteResponse> {
        let cmd = WriteCmd {
            doctype: doctype.to_string(),
            kind,
            read_only,
        };
        let mut results = self.committer.write(instance, vec![cmd]).await?;
        let ok = results
            .pop()
            .ok_or_else(|| DocumentsError::Corrupt("no write result".into()))??;
        Ok(pb::WriteResponse {
            id: ok.id,
            rev: ok.rev,
            json: ok.json,
        })
    }

    async fn create_index(&self, instance: &str, doctype: &str, body: &[u8]) -> Result<Bytes> {
        let req = crate::index::parse_request(body)?;
        let view = crate::index::view_json(&req);
        for _ in 0..5 {
            let current = match query::get(&self.shared, instance, doctype, &req.ddoc, "").await {
                Ok(raw) => Some(
                    serde_json::from_slice::<Map<String, Value>>(&raw)
                        .map_err(|e| DocumentsError::Corrupt(e.to_string()))?,
                ),
                Err(DocumentsError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            let existing_view = current
                .as_ref()
                .and_then(|d| d.get("views"))
                .and_then(|v| v.get(&req.name));
            if existing_view == Some(&view) {
                return Ok(Bytes::from(
                    serde_json::to_vec(&json!({"result": "exists", "id": req.ddoc, "name": req.name})).expect("json"),
                ));
            }
            let mut doc = current.unwrap_or_default();
            doc.insert("language".into(), json!("query"));
            let views = doc.entry("views").or_insert_with(|| json!({}));
            if !views.is_object() {
                *views = json!({});
            }
            views[&req.name] = view.clone();
            let kind = WriteKind::Put {
                id: Some(req.ddoc.clone()),
                fields: Fields::from_map(doc)?,
            };
            match self.write_one(instance, doctype, kind, None).await {
                Ok(_) => {
                    return Ok(Bytes::from(
                        serde_json::to_vec(&json!({"result": "created", "id": req.ddoc, "name": req.name}))
                            .expect("json"),
                    ));
                }
                Err(DocumentsError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(DocumentsError::Conflict)
    }

    async fn bulk_docs(&self, instance: &str, doctype: &str, body: &[u8], read_only: ReadOnly) -> Result<Bytes> {
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| DocumentsError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        let docs = req
            .get("docs")
            .and_then(Value::as_array)
            .ok_or_else(|| DocumentsError::BadRequest("the body needs \"docs\": [...]".into()))?;
        let new_edits = req.get("new_edits").and_then(Value::as_bool).unwrap_or(true);
        let mut results: Vec<Option<Value>> = Vec::with_capacity(docs.len());
        let mut cmds = Vec::new();
        let mut slots = Vec::new();
        for (i, doc) in docs.iter().enumerate() {
            let id = doc.get("_id").and_then(Value::as_str).unwrap_or_default().to_string();
            let checked = match doc {
                Value::Object(map) => {
                    let limit = self.config.max_doc_bytes;
                    if new_edits {
                        Fields::from_map(map.clone()).and_then(|mut fields| match fields.json.len() {
                            size if size > limit => Err(DocumentsError::TooLarge { size, limit }),
                            _ => {
                                self.seal_account(instance, doctype, &mut fields.json);
                                Ok(WriteKind::Put {
                                    id: fields.id.take(),
                                    fields,
                                })
                            }
                        })
                    } else {
                        let size = serde_json::to_vec(map).map_or(0, |v| v.len());
                        if size > limit {
                            Err(DocumentsError::TooLarge { size, limit })
                        } else {
                            // `_revisions` is the revision's history, which replication sends.
                            let keys = map.keys().map(String::as_str).filter(|k| *k != "_revisions");
                            body::check_key_list(keys).map(|()| {
                                let mut body = map.clone();
                                body.shift_remove(body::CLIENT_TYPE);
                                if doctype == crate::accounts::DOCTYPE {
                                    self.vault(instance).seal(&mut body);
                                }
                                WriteKind::Replicate { body }
                            })
                        }
                    }
                }
                _ => Err(DocumentsError::BadRequest("each document must be a JSON object".into())),
            };
            match checked {
                Ok(kind) => {
                    cmds.push(WriteCmd {
                        doctype: doctype.to_string(),
                        kind,
                        read_only: read_only.clone(),
                    });
                    slots.push(i);
                    results.push(None);
                }
                Err(e) => results.push(Some(error_json(&id, &e))),
            }
        }
        let written = self.committer.write(instance, cmds).await?;
        for (slot, res) in slots.into_iter().zip(written) {
            results[slot] = match res {
                Ok(ok) if new_edits => Some(json!({"ok": true, "id": ok.id, "rev": ok.rev})),
                Ok(_) => None,
                Err(e) => {
                    let id = docs[slot].get("_id").and_then(Value::as_str).unwrap_or_default();
                    Some(error_json(id, &e))
                }
            };
        }
        let out: Vec<Value> = results.into_iter().flatten().collect();
        Ok(Bytes::from(serde_json::to_vec(&out).expect("json")))
    }
}

#[tonic::async_trait]
impl pb::documents_service_server::DocumentsService for DocumentsService {
    async fn get_document(&self, req: Request<pb::GetDocumentRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        let options = ReadOptions {
            rev: &req.rev,
            revs: req.revs,
            conflicts: req.conflicts,
            open_revs: &req.open_revs,
            latest: req.latest,
        };
        let doc = replication::get(&self.shared, &s.instance, &s.doctype, &req.id, options).await?;
        if req.open_credentials && req.open_revs.is_empty() {
            return Ok(json(self.open_account(&s.instance, &s.doctype, doc)));
        }
        Ok(json(doc))
    }

    async fn put_document(&self, req: Request<pb::PutDocumentRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        let owner = !req.owner.is_empty()
            && self.mesh_key.check_derived(
                cocon_common::ticket::DOCTYPE_OWNER,
                &[&s.instance, &s.doctype],
                &req.owner,
            );
        if !owner {
            validate::writable_doctype(&s.doctype)?;
        }
        let mut fields = Fields::parse(&req.body, self.config.max_doc_bytes)?;
        let id = match (req.id.is_empty(), fields.id.take()) {
            (true, id) => id,
            (false, Some(b)) if b != req.id => {
                return Err(DocumentsError::BadRequest(format!(
                    "the body's _id {b:?} is not the URL's id {:?}",
                    req.id
                ))
                .into());
            }
            (false, _) => Some(req.id),
        };
        self.seal_account(&s.instance, &s.doctype, &mut fields.json);
        let mut res = self
            .write_one(&s.instance, &s.doctype, WriteKind::Put { id, fields }, read_only(&s))
            .await?;
        if req.open_credentials {
            res.json = self.open_account(&s.instance, &s.doctype, res.json);
        }
        Ok(Response::new(res))
    }

    async fn delete_document(
        &self,
        req: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        validate::writable_doctype(&s.doctype)?;
        if req.rev.is_empty() {
            return Err(
                DocumentsError::BadRequest("deleting needs the current revision: ?rev=… or If-Match".into()).into(),
            );
        }
        let res = self
            .write_one(
                &s.instance,
                &s.doctype,
                WriteKind::Delete {
                    id: req.id,
                    rev: req.rev,
                },
                read_only(&s),
            )
            .await?;
        Ok(Response::new(res))
    }

    async fn bulk_docs(&self, req: Request<pb::BulkDocsRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        validate::writable_doctype(&s.doctype)?;
        Ok(json(
            self.bulk_docs(&s.instance, &s.doctype, &req.body, read_only(&s))
                .await?,
        ))
    }

    async fn all_docs(&self, req: Request<pb::AllDocsRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        let params = AllDocsParams {
            include_docs: req.include_docs,
            keys: req.has_keys.then_some(req.keys),
            limit: req.has_limit.then_some(req.limit as usize),
            skip: req.skip as usize,
            start_key: (!req.start_key.is_empty()).then_some(req.start_key),
            end_key: (!req.end_key.is_empty()).then_some(req.end_key),
            descending: req.descending,
        };
        Ok(json(
            query::all_docs(&self.shared, &s.instance, &s.doctype, params).await?,
        ))
    }

    async fn normal_docs(&self, req: Request<pb::NormalDocsRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        let limit = if req.limit == 0 {
            query::DEFAULT_LIMIT
        } else {
            req.limit as usize
        };
        Ok(json(
            query::normal_docs(
                &self.shared,
                &s.instance,
                &s.doctype,
                limit,
                req.skip as usize,
                &req.bookmark,
            )
            .await?,
        ))
    }

    async fn create_index(&self, req: Request<pb::CreateIndexRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        Ok(json(self.create_index(&s.instance, &s.doctype, &req.body).await?))
    }

    async fn find(&self, req: Request<pb::FindRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        Ok(json(
            query::find(&self.shared, &s.instance, &s.doctype, &req.body).await?,
        ))
    }

    async fn changes(&self, req: Request<pb::ChangesRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        let longpoll = match req.feed.as_str() {
            "" | "normal" => false,
            "longpoll" => true,
            other => {
                return Err(
                    DocumentsError::BadRequest(format!("unsupported feed {other:?}: use normal or longpoll")).into(),
                );
            }
        };
        let timeout = match req.timeout_ms {
            0 => self.config.max_longpoll_ms,
            t => t.min(self.config.max_longpoll_ms),
        };
        let params = ChangesParams {
            since: req.since,
            limit: req.has_limit.then_some(req.limit as usize),
            include_docs: req.include_docs,
            descending: req.descending,
            longpoll,
            timeout: Duration::from_millis(timeout),
            all_docs: match req.style.as_str() {
                "" | "main_only" => false,
                "all_docs" => true,
                other => {
                    return Err(DocumentsError::BadRequest(format!(
                        "unsupported style {other:?}: use main_only or all_docs"
                    ))
                    .into());
                }
            },
        };
        Ok(json(
            query::changes(&self.shared, &s.instance, &s.doctype, params).await?,
        ))
    }

    async fn design_docs(&self, req: Request<pb::DesignDocsRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let s = self.scope(req.into_inner().scope)?;
        Ok(json(query::design_docs(&self.shared, &s.instance, &s.doctype).await?))
    }

    async fn delete_design_doc(
        &self,
        req: Request<pb::DeleteDesignDocRequest>,
    ) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        if req.rev.is_empty() {
            return Err(DocumentsError::BadRequest("deleting a design document needs ?rev=".into()).into());
        }
        let id = format!("_design/{}", req.ddoc.trim_start_matches("_design/"));
        let res = self
            .write_one(&s.instance, &s.doctype, WriteKind::Delete { id, rev: req.rev }, None)
            .await?;
        Ok(json(Bytes::from(
            serde_json::to_vec(&json!({"ok": true, "id": res.id, "rev": res.rev})).expect("json"),
        )))
    }

    async fn all_doctypes(&self, req: Request<pb::AllDoctypesRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        self.instance_of(&req.instance, &req.ticket)?;
        Ok(json(query::all_doctypes(&self.shared, &req.instance).await?))
    }

    async fn revs_diff(&self, req: Request<pb::BodyRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        Ok(json(
            replication::revs_diff(&self.shared, &s.instance, &s.doctype, &req.body).await?,
        ))
    }

    async fn bulk_get(&self, req: Request<pb::BodyRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        Ok(json(
            replication::bulk_get(&self.shared, &s.instance, &s.doctype, &req.body, req.revs).await?,
        ))
    }

    async fn get_local(&self, req: Request<pb::GetDocumentRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        let id = local_id(&req.id)?;
        Ok(json(
            replication::get_local(&self.shared, &s.instance, &s.doctype, &id).await?,
        ))
    }

    async fn put_local(&self, req: Request<pb::PutDocumentRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let s = self.scope(req.scope)?;
        let id = local_id(&req.id)?;
        let body = if req.body.is_empty() {
            None
        } else {
            if req.body.len() > self.config.max_doc_bytes {
                return Err(DocumentsError::TooLarge {
                    size: req.body.len(),
                    limit: self.config.max_doc_bytes,
                }
                .into());
            }
            Some(
                serde_json::from_slice::<Map<String, Value>>(&req.body)
                    .map_err(|_| DocumentsError::BadRequest("a _local document is a JSON object".into()))?,
            )
        };
        let res = self
            .write_one(&s.instance, &s.doctype, WriteKind::Local { id, body }, None)
            .await?;
        Ok(Response::new(res))
    }

    async fn doctype_info(&self, req: Request<pb::DoctypeInfoRequest>) -> Result<Response<pb::JsonResponse>, Status> {
        let s = self.scope(req.into_inner().scope)?;
        Ok(json(
            replication::doctype_info(&self.shared, &s.instance, &s.doctype).await?,
        ))
    }
}

/// A `_local/` document's id, from the part after `_local/` or the whole id.
fn local_id(id: &str) -> Result<String> {
    let name = id.strip_prefix(crate::projection::LOCAL_PREFIX).unwrap_or(id);
    if name.is_empty() {
        return Err(DocumentsError::BadRequest("the _local document's id is empty".into()));
    }
    Ok(format!("{}{name}", crate::projection::LOCAL_PREFIX))
}
