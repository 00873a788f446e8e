//! One device session over WebSocket: hello, authentication, then requests.
//!
//! The session owns its connection permit, so the connection limit counts live sessions.
//! Requests on one connection are answered in order. Every write to the socket is bounded
//! by `write_timeout_ms`: a peer that stops reading is disconnected instead of holding
//! the session (and its permit) forever, since a session stuck writing would never reach
//! its authentication or idle deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use rand_core::{OsRng, RngCore};
use redoubt_proto::{
    Bytes, ClientFrame, DecodeError, ErrorBody, ErrorCode, Hello, PROTOCOL_VERSION, Request, Response,
    ServerFrame, decode_client_frame, encode_server_frame,
};
use tokio::sync::watch;

use crate::State;
use crate::api::{self, Authenticated, Peer};
use crate::delivery::{self, Push};
use crate::error::ApiError;
use crate::listener::ConnectionInfo;
use crate::management;

enum Phase {
    Unauthenticated { requests: u32 },
    Authenticated(Authenticated),
}

/// What the loop does after a frame.
enum Next {
    Continue,
    Close(u16, &'static str),
}

/// Runs a session to its end. Its future is the task every idle session keeps, so it is
/// kept small: the body is an `async move` block (an `async fn` would hold the socket twice,
/// as argument and as local), frames are encoded before their writes are awaited, and the
/// handling of a request, several KB of state, is boxed.
#[allow(clippy::manual_async_fn, reason = "an async fn would keep the socket twice")]
pub(crate) fn run(
    state: Arc<State>,
    connection: Arc<ConnectionInfo>,
    mut socket: WebSocket,
    mut shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    async move {
        let _counted = crate::metrics::SessionGuard::new(&state.metrics);
        let limits = &state.config.limits;
        let write_timeout = Duration::from_millis(limits.write_timeout_ms);
        let mut challenge = [0; redoubt_proto::CHALLENGE_BYTES];
        OsRng.fill_bytes(&mut challenge);
        let peer = Peer {
            challenge: Bytes(challenge),
            tls_exporter: connection.tls_exporter,
        };
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            challenge: peer.challenge,
            server_time_unix_s: state.now(),
            frame_bytes_max: limits.frame_bytes_max,
            nodes: state.cluster.addresses().to_vec(),
        };
        // A temporary, not a local: a local's room would stay in the session's task.
        let sending = send(&mut socket, &ServerFrame::Hello(hello), write_timeout);
        if sending.await.is_err() {
            return;
        }

        let mut phase = Phase::Unauthenticated { requests: 0 };
        let auth_deadline = tokio::time::Instant::now() + Duration::from_millis(limits.auth_timeout_ms);
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let mut idle_deadline = tokio::time::Instant::now() + idle;
        // One timer for pings and deadlines (a tokio Interval would be one more allocation
        // per session).
        let ping_interval = Duration::from_millis(limits.ping_interval_ms);
        let mut next_ping = tokio::time::Instant::now() + ping_interval;

        let mut transfers = crate::blobs::Transfers::default();
        // Events for this session, once it has authenticated.
        let mut events: Option<(u64, std::sync::Arc<delivery::Queue>)> = None;
        let close = loop {
            if events.is_none()
                && let Phase::Authenticated(who) = &phase
            {
                connection.authenticated();
                events = Some(state.subscribers.subscribe(
                    who.device_id,
                    limits.session_events_max as usize,
                    limits.session_inline_bytes_max as usize,
                ));
            }
            let (deadline, wake) = match phase {
                Phase::Unauthenticated { .. } => {
                    let deadline = auth_deadline.min(idle_deadline);
                    (deadline, deadline)
                }
                Phase::Authenticated(_) => (idle_deadline, idle_deadline.min(next_ping)),
            };
            tokio::select! {
                _ = shutdown.changed() => break Some((close_code::AWAY, "server shutting down")),
                event = next_event(&mut events) => match event {
                    Some(Push::Event(event)) => {
                        state.metrics.deliveries.inc();
                        let sending = send(&mut socket, &ServerFrame::Event(event), write_timeout);
                        if sending.await.is_err() {
                            break None;
                        }
                    }
                    Some(Push::Close(reason)) => break Some((close_code::POLICY, reason)),
                    // The subscriber list dropped us: our queue was full.
                    None => break Some((close_code::POLICY, "too slow to receive events")),
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() < deadline {
                        next_ping = tokio::time::Instant::now() + ping_interval;
                        if write(&mut socket, Message::Ping(Default::default()), write_timeout).await.is_err() {
                            break None;
                        }
                        continue;
                    }
                    if matches!(phase, Phase::Unauthenticated { .. }) {
                        let error = ErrorBody::new(ErrorCode::Unauthenticated, "authentication timed out");
                        let sending = send(&mut socket, &ServerFrame::Error { request_id: 0, error }, write_timeout);
                        let _ = sending.await;
                        break Some((close_code::POLICY, "authentication timed out"));
                    }
                    break Some((close_code::AWAY, "idle timeout"));
                }
                message = socket.recv() => {
                    idle_deadline = tokio::time::Instant::now() + idle;
                    match message {
                        None | Some(Ok(Message::Close(_))) => break None,
                        Some(Err(error)) => {
                            tracing::debug!(peer = %connection.peer, %error, "websocket read failed");
                            let Some((error, close)) = websocket_error(error, limits.frame_bytes_max) else {
                                break None;
                            };
                            let sending = send(&mut socket, &ServerFrame::Error { request_id: 0, error }, write_timeout);
                            let _ = sending.await;
                            break Some(close);
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Text(_))) => {
                            let error = ErrorBody::new(ErrorCode::MalformedFrame, "frames are binary WebSocket messages");
                            let sending = send(&mut socket, &ServerFrame::Error { request_id: 0, error }, write_timeout);
                            let _ = sending.await;
                            break Some((close_code::UNSUPPORTED, "binary frames only"));
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            // Boxed: the largest request's state machine is several KB, and inline
                            // it would be part of every idle session's task.
                            let handled = Box::pin(handle_frame(&state, &peer, &mut phase, &mut transfers, &mut socket, &bytes));
                            match handled.await {
                                Ok(Next::Continue) => {}
                                Ok(Next::Close(code, reason)) => break Some((code, reason)),
                                Err(()) => break None,
                            }
                        }
                    }
                }
            }
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = write(&mut socket, Message::Close(Some(frame)), write_timeout).await;
        }
        Box::pin(crate::blobs::abandon(&state, &mut transfers)).await;
        if let Phase::Authenticated(who) = &phase {
            if let Some((id, _)) = events {
                state.subscribers.unsubscribe(&who.device_id, id);
            }
            tracing::debug!(device_id = %who.device_id, "session ended");
        }
    }
}

/// Answers a connection beyond `connections_max`: `server_busy` in place of the hello,
/// then close 1013 (try again later). The client tries another node or backs off.
pub(crate) async fn refuse_busy(mut socket: WebSocket) {
    let error = ErrorBody::new(
        ErrorCode::ServerBusy,
        "the server is at its connection limit; try again later",
    );
    let timeout = Duration::from_secs(5);
    if send(&mut socket, &ServerFrame::Error { request_id: 0, error }, timeout)
        .await
        .is_ok()
    {
        let frame = CloseFrame {
            code: close_code::AGAIN,
            reason: "server busy".into(),
        };
        let _ = write(&mut socket, Message::Close(Some(frame)), timeout).await;
    }
}

/// What to tell a peer whose WebSocket stream failed, and how to close: `None` when the
/// connection itself failed (nothing can be sent).
fn websocket_error(error: axum::Error, frame_bytes_max: u32) -> Option<(ErrorBody, (u16, &'static str))> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error.into_inner().downcast::<WsError>().map(|error| *error) {
        // tungstenite refuses an oversized frame from its header, before reading (or
        // allocating for) the payload.
        Ok(WsError::Capacity(_)) => Some((
            ErrorBody::new(
                ErrorCode::FrameTooLarge,
                format!("frames may be at most {frame_bytes_max} bytes"),
            ),
            (close_code::SIZE, "frame too large"),
        )),
        Ok(WsError::Protocol(violation)) => Some((
            ErrorBody::new(
                ErrorCode::WebsocketProtocolError,
                format!("WebSocket protocol error: {violation}"),
            ),
            (close_code::PROTOCOL, "WebSocket protocol error"),
        )),
        Ok(WsError::Utf8(_)) => Some((
            ErrorBody::new(
                ErrorCode::WebsocketProtocolError,
                "WebSocket protocol error: invalid UTF-8",
            ),
            (close_code::PROTOCOL, "WebSocket protocol error"),
        )),
        _ => None,
    }
}

/// The next event, or pending forever before the session has subscribed.
async fn next_event(events: &mut Option<(u64, std::sync::Arc<delivery::Queue>)>) -> Option<Push> {
    match events {
        Some((_, queue)) => queue.next().await,
        None => std::future::pending().await,
    }
}

/// Encodes `frame` now and returns the write: the caller need not keep the frame while the
/// write is awaited.
fn send<'s>(
    socket: &'s mut WebSocket,
    frame: &ServerFrame,
    timeout: Duration,
) -> impl Future<Output = Result<(), ()>> + use<'s> {
    write(
        socket,
        Message::Binary(encode_server_frame(frame).into()),
        timeout,
    )
}

/// Writes one message, giving up after `timeout` (`limits.write_timeout_ms`): a peer that
/// does not read its socket must not hold the session forever. `Err(())` means the socket
/// failed or the peer stopped reading; the session then ends without a close frame, which
/// could not be delivered either.
async fn write(socket: &mut WebSocket, message: Message, timeout: Duration) -> Result<(), ()> {
    match tokio::time::timeout(timeout, socket.send(message)).await {
        Ok(result) => result.map_err(|_| ()),
        Err(_) => {
            tracing::info!(
                timeout_ms = timeout.as_millis(),
                "the peer did not read its socket; closing the session (limits.write_timeout_ms)"
            );
            Err(())
        }
    }
}

/// Answers one frame. `Err(())` means the socket failed.
async fn handle_frame(
    state: &State,
    peer: &Peer,
    phase: &mut Phase,
    transfers: &mut crate::blobs::Transfers,
    socket: &mut WebSocket,
    bytes: &[u8],
) -> Result<Next, ()> {
    let limits = &state.config.limits;
    let write_timeout = Duration::from_millis(limits.write_timeout_ms);
    let started = Instant::now();
    let frame = match decode_client_frame(bytes, limits.frame_bytes_max as usize) {
        Ok(frame) => frame,
        Err(error) => {
            let code = match error {
                DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
                _ => ErrorCode::MalformedFrame,
            };
            state
                .metrics
                .request("undecodable", code.as_str(), started.elapsed());
            let error = ErrorBody::new(code, error.to_string());
            send(
                socket,
                &ServerFrame::Error { request_id: 0, error },
                write_timeout,
            )
            .await?;
            return Ok(Next::Close(close_code::PROTOCOL, "undecodable frame"));
        }
    };
    let ClientFrame { request_id, request } = frame;
    let kind = request.kind();

    let mut next = Next::Continue;
    let result = match phase {
        Phase::Unauthenticated { requests } => {
            *requests += 1;
            if *requests > limits.unauthenticated_requests_max {
                state.metrics.refused_by("unauthenticated_requests_max");
                next = Next::Close(close_code::POLICY, "too many requests before authenticating");
                Err(ApiError::new(
                    ErrorCode::TooManyUnauthenticatedRequests,
                    "too many requests before authenticating",
                ))
            } else {
                unauthenticated(state, peer, phase, request).await
            }
        }
        Phase::Authenticated(who) => {
            // Chunks of a transfer already under way skip the request rate: they are bounded
            // by the attachment size limit and the open uploads per session, and counting
            // them would make files crawl. Any other chunk request (an unknown upload, a
            // blob not yet fetched on this session) counts, so it cannot be sent at will.
            let bulk = transfers.is_under_way(&request);
            if bulk || state.limiter.allow(&who.device_id, Instant::now()) {
                match compliance(state, who, &request).await {
                    Ok(()) => authenticated(state, who, transfers, request).await,
                    Err(error) => Err(error),
                }
            } else {
                state.metrics.refused_by("device_requests_per_second");
                Err(ApiError::new(
                    ErrorCode::RateLimited,
                    "request rate limit exceeded; slow down",
                ))
            }
        }
    };
    let code = match &result {
        Ok(_) => "ok",
        Err(ApiError(error)) => error.code.as_str(),
    };
    state.metrics.request(kind, code, started.elapsed());
    let reply = match result {
        Ok(response) => ServerFrame::Response { request_id, response },
        Err(ApiError(error)) => ServerFrame::Error { request_id, error },
    };
    send(socket, &reply, write_timeout).await?;
    Ok(next)
}

async fn unauthenticated(
    state: &State,
    peer: &Peer,
    phase: &mut Phase,
    request: Request,
) -> Result<Response, ApiError> {
    match request {
        Request::Enroll(enroll) => api::enroll(state, peer, enroll).await.map(Response::Enrolled),
        Request::Authenticate(auth) => {
            let (who, info) = api::authenticate(state, peer, auth).await?;
            *phase = Phase::Authenticated(who);
            Ok(Response::Authenticated(info))
        }
        Request::KtHead { epoch } => state
            .kt
            .head(epoch, None)
            .await
            .map(|h| Response::KtHead(Box::new(h))),
        Request::KtAudit { after_epoch, limit } => {
            state.kt.audit(after_epoch, limit).await.map(Response::KtAudit)
        }
        Request::KtAuditorSign(document) => crate::kt::auditor_sign(state, document)
            .await
            .map(|()| Response::Done),
        _ => Err(ApiError::new(ErrorCode::Unauthenticated, "authenticate first")),
    }
}

/// Refuses everything but the requests a device needs to comply while a wipe waits for
/// it, while it waits for approval, or until it acknowledges the current policy.
async fn compliance(state: &State, who: &mut Authenticated, request: &Request) -> Result<(), ApiError> {
    if request.allowed_before_compliance() {
        return Ok(());
    }
    if state.is_wipe_pending(&who.device_id) {
        return Err(ApiError::new(
            ErrorCode::CommandPending,
            "a remote command is waiting for this device: fetch and acknowledge it",
        ));
    }
    if !who.approved {
        let approved = state
            .store
            .device(&who.device_id)
            .await?
            .is_some_and(|d| d.approved_at_unix_s.is_some());
        if !approved {
            return Err(ApiError::new(
                ErrorCode::DeviceApprovalRequired,
                "approve this device from another of your devices (`redoubt device approve`)",
            ));
        }
        who.approved = true;
    }
    let current = state.policy_version();
    if who.policy_acked < current {
        return Err(ApiError::new(
            ErrorCode::PolicyRefreshRequired,
            format!("the organisation's policy changed (version {current}): fetch, apply and acknowledge it"),
        ));
    }
    Ok(())
}

async fn authenticated(
    state: &State,
    who: &mut Authenticated,
    transfers: &mut crate::blobs::Transfers,
    request: Request,
) -> Result<Response, ApiError> {
    match request {
        Request::Enroll(_) | Request::Authenticate(_) => Err(ApiError::new(
            ErrorCode::AlreadyAuthenticated,
            "this session is already authenticated",
        )),
        Request::WhoAmI => api::session_info(state, who).await.map(Response::WhoAmI),
        Request::AdminUserAdd { user, display_name } => api::user_add(state, who, user, display_name)
            .await
            .map(Response::ActivationCodeIssued),
        Request::AdminDeviceAdd { user } => api::device_add(state, who, user)
            .await
            .map(Response::ActivationCodeIssued),
        Request::AdminUserList => api::user_list(state, who).await.map(Response::Users),
        Request::AdminDeviceList { user } => api::device_list(state, who, user).await.map(Response::Devices),
        Request::KeyPackagesPublish {
            key_packages,
            last_resort,
        } => delivery::publish_key_packages(state, who, key_packages, last_resort)
            .await
            .map(|available| Response::KeyPackagesPublished { available }),
        Request::KeyPackagesClaim {
            users,
            except_devices,
        } => delivery::claim_key_packages(state, users, except_devices)
            .await
            .map(Response::KeyPackages),
        Request::GroupCreate { group_info } => delivery::create_group(state, who, group_info)
            .await
            .map(|group_id| Response::GroupCreated { group_id }),
        Request::GroupSubmit(submit) => delivery::submit(state, who, submit)
            .await
            .map(|(seq, duplicate)| {
                if !duplicate {
                    state.message_appended();
                }
                Response::Submitted { seq, duplicate }
            }),
        Request::GroupFetch {
            group_id,
            after_seq,
            limit,
        } => delivery::fetch(state, who, group_id, after_seq, limit)
            .await
            .map(|(entries, last_seq)| {
                state.metrics.fetched_entries.inc_by(entries.len() as u64);
                Response::GroupEntries { entries, last_seq }
            }),
        Request::GroupList => delivery::group_list(state, who).await.map(Response::Groups),
        Request::InboxFetch => delivery::inbox(state, who).await.map(Response::Inbox),
        Request::InboxAck { ids } => delivery::inbox_ack(state, who, ids)
            .await
            .map(|()| Response::Done),
        Request::UserDevices { users } => delivery::user_devices(state, users)
            .await
            .map(Response::UserDevices),
        Request::BlobUploadStart {
            group_id,
            bytes_total,
            chunk_count,
        } => crate::blobs::start(state, who, transfers, group_id, bytes_total, chunk_count)
            .await
            .map(|blob_id| Response::BlobUploadStarted { blob_id }),
        Request::BlobUploadChunk {
            blob_id,
            index,
            bytes,
        } => crate::blobs::chunk(state, transfers, blob_id, index, bytes)
            .await
            .map(|()| Response::Done),
        Request::BlobUploadFinish { blob_id } => crate::blobs::finish(state, transfers, blob_id)
            .await
            .map(|()| Response::Done),
        Request::GroupAck { group_id, seq } => delivery::ack(state, who, group_id, seq)
            .await
            .map(|()| Response::Done),
        Request::AdminPolicySet { scope, settings } => management::policy_set(state, who, scope, settings)
            .await
            .map(|version| Response::PolicySet { version }),
        Request::AdminPolicyShow { user } => management::policy_show(state, who, user)
            .await
            .map(Response::PolicyReport),
        Request::AdminGroupCreate { group } => management::group_create(state, who, group)
            .await
            .map(|()| Response::Done),
        Request::AdminGroupMember { group, user, add } => {
            management::group_member(state, who, group, user, add)
                .await
                .map(|()| Response::Done)
        }
        Request::AdminGroupList => management::group_list(state, who)
            .await
            .map(Response::DirectoryGroups),
        Request::AdminUserImport { users } => management::user_import(state, who, users)
            .await
            .map(Response::Imported),
        Request::AdminDeviceCommand { device, kind } => management::device_command(state, who, device, kind)
            .await
            .map(|command_id| Response::CommandIssued { command_id }),
        Request::AdminDeviceRevoke { device } => management::device_revoke(state, who, device)
            .await
            .map(|groups| Response::Revoked { groups }),
        Request::AdminRole { user, role, grant } => management::role(state, who, user, role, grant)
            .await
            .map(|()| Response::Done),
        Request::AdminAuditList { after_seq, limit } => {
            management::audit_list(state, who, after_seq, limit).await
        }
        Request::PolicyFetch => management::policy_fetch(state, who).await.map(Response::Policy),
        Request::PolicyAck { version } => management::policy_ack(state, who, version)
            .await
            .map(|()| Response::Done),
        Request::CommandsFetch => management::commands_fetch(state, who)
            .await
            .map(Response::Commands),
        Request::CommandAck { command_id } => management::command_ack(state, who, command_id)
            .await
            .map(|()| Response::Done),
        Request::DeviceApprove { device, approval } => {
            management::device_approve(state, who, device, approval)
                .await
                .map(|()| Response::Done)
        }
        Request::OwnDevices => management::own_devices(state, who).await.map(Response::Devices),
        Request::HistoryBegin {
            target,
            group_id,
            own,
        } => crate::history::begin(state, who, target, group_id, own)
            .await
            .map(|()| Response::Done),
        Request::HistorySent { target, messages } => crate::history::sent(state, who, target, messages)
            .await
            .map(|()| Response::Done),
        Request::HistoryReceived { group_id } => crate::history::received(state, who, group_id)
            .await
            .map(|()| Response::Done),
        Request::AdminMailSet(settings) => crate::mail::set(state, who, settings)
            .await
            .map(|()| Response::Done),
        Request::AdminMailMap { user, address } => crate::mail::map(state, who, user, address)
            .await
            .map(|()| Response::Done),
        Request::AdminMailShow => crate::mail::show(state, who).await.map(Response::MailSettings),
        Request::AdminClusterList => crate::cluster::list(state, who).await.map(Response::ClusterNodes),
        Request::AdminStats => crate::stats::stats(state, who).await.map(Response::Stats),
        Request::AdminDirectorySet(settings) => crate::directory::set(state, who, settings)
            .await
            .map(|()| Response::Done),
        Request::AdminDirectorySync {
            dry_run,
            force,
            adopt,
        } => {
            let request = crate::directory::SyncRequest {
                dry_run,
                force,
                adopt,
            };
            crate::directory::sync_request(state, who, request)
                .await
                .map(|report| Response::DirectorySync(Box::new(report)))
        }
        Request::AdminDirectoryShow => crate::directory::show(state, who)
            .await
            .map(|status| Response::DirectoryStatus(Box::new(status))),
        Request::AdminScimTokenCreate { name } => crate::directory::scim_token_create(state, who, name)
            .await
            .map(Response::ScimTokenCreated),
        Request::AdminScimTokenList => crate::directory::scim_token_list(state, who)
            .await
            .map(Response::ScimTokens),
        Request::AdminScimSet { email_codes } => crate::directory::scim_set(state, who, email_codes)
            .await
            .map(|()| Response::Done),
        Request::AdminScimTokenRevoke { name } => crate::directory::scim_token_revoke(state, who, name)
            .await
            .map(|()| Response::Done),
        Request::AdminDavSet(settings) => crate::mail::dav_set(state, who, settings)
            .await
            .map(|()| Response::Done),
        Request::MailLink { credential } => crate::mail::link(state, who, credential)
            .await
            .map(|()| Response::Done),
        Request::KtHead { epoch } => state
            .kt
            .head(epoch, Some(&who.user))
            .await
            .map(|h| Response::KtHead(Box::new(h))),
        Request::KtHistory { user } => state
            .kt
            .history(user, &who.user)
            .await
            .map(|h| Response::KtHistory(Box::new(h))),
        Request::KtAudit { after_epoch, limit } => {
            state.kt.audit(after_epoch, limit).await.map(Response::KtAudit)
        }
        Request::KtAuditorSign(document) => crate::kt::auditor_sign(state, document)
            .await
            .map(|()| Response::Done),
        Request::BlobFetch { blob_id, index } => crate::blobs::fetch(state, who, transfers, blob_id, index)
            .await
            .map(|(bytes, chunk_count, bytes_total)| Response::BlobChunk {
                bytes,
                chunk_count,
                bytes_total,
            }),
    }
}
