//! History for devices that were not there when it was written: a user's newly enrolled
//! device, and members added to a conversation that shares its history.
//!
//! The sending device puts the history (conversations, messages with their attachment keys,
//! receipts) into parts of at most [`HISTORY_PART_BYTES_MAX`], uploads each as a blob
//! encrypted under a fresh key, and sends the keys in an [`AppBody::History`] to a group it
//! made for that transfer alone: itself and the receiving device. The server relays
//! ciphertext and deletes the blobs once the receiver says it stored them.
//!
//! Vault keys (namespace `app`): `xfer/<group>` marks a transfer group (not a
//! conversation: never listed, no devices added to it); `histin/<group>` holds an offer
//! received and not yet stored (so a crash resumes it: storing is idempotent by message);
//! `settings/<group>` a conversation's [`ConversationSettings`].

use std::collections::BTreeSet;

use redoubt_mls::AppBody;
use redoubt_mls::history::{
    ConversationSettings, HISTORY_PART_BYTES_MAX, HISTORY_PARTS_MAX, HistoryConversation, HistoryMessage,
    HistoryOffer, HistoryPart,
};
use redoubt_proto::{DeviceId, DeviceSummary, ErrorCode, GroupId, HistoryState, Request, Response, UserName};
use serde::{Deserialize, Serialize};

use super::{Conversation, Messenger, Receipts, StoredMessage, storage_error};
use crate::{ClientError, unix_now};

/// A part is cut before it passes this many bytes, leaving room under the limit for the
/// conversation headers that open it.
const PART_FILL_BYTES: usize = (HISTORY_PART_BYTES_MAX as usize) - 64 * 1024;

fn transfer_key(group: &GroupId) -> String {
    format!("xfer/{group}")
}

fn incoming_key(group: &GroupId) -> String {
    format!("histin/{group}")
}

fn settings_key(group: &GroupId) -> String {
    format!("settings/{group}")
}

/// An offer received in a transfer group and not yet stored.
#[derive(Serialize, Deserialize)]
struct Incoming {
    offer: HistoryOffer,
    sender_user: UserName,
    sender_device: DeviceId,
    /// Parts already stored (a restart resumes after them).
    parts_done: u32,
}

/// What one history transfer covers: conversations, each from some time on.
struct Selection {
    conversations: Vec<(Conversation, i64)>,
}

impl Messenger {
    pub(super) fn is_transfer_group(&self, group: &GroupId) -> Result<bool, ClientError> {
        Ok(self
            .data
            .get(&transfer_key(group))
            .map_err(storage_error)?
            .is_some())
    }

    pub(super) fn mark_transfer_group(&self, group: &GroupId) -> Result<(), ClientError> {
        self.data
            .insert(&transfer_key(group), &[1])
            .map_err(storage_error)
    }

    /// The ids of every transfer group this device knows.
    pub(super) fn transfer_groups(&self) -> Result<BTreeSet<GroupId>, ClientError> {
        Ok(self
            .data
            .get_by_prefix("xfer/")
            .map_err(storage_error)?
            .into_iter()
            .filter_map(|(key, _)| key.strip_prefix("xfer/").and_then(super::parse_group_id))
            .collect())
    }

    /// A conversation's settings as its members last said them (all off by default).
    pub fn settings(&self, conversation: &Conversation) -> Result<ConversationSettings, ClientError> {
        self.load_settings(&conversation.group_id)
    }

    fn load_settings(&self, group: &GroupId) -> Result<ConversationSettings, ClientError> {
        Ok(self
            .data
            .get(&settings_key(group))
            .map_err(storage_error)?
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_default())
    }

    fn save_settings(&self, group: &GroupId, settings: ConversationSettings) -> Result<(), ClientError> {
        let bytes = postcard::to_stdvec(&settings).map_err(storage_error)?;
        self.data
            .insert(&settings_key(group), &bytes)
            .map_err(storage_error)
    }

    /// Applies settings a member sent; a change (not a repeat for new members) is kept as an
    /// event in the conversation.
    pub(super) fn apply_settings(
        &self,
        group: &GroupId,
        seq: u64,
        sender: &redoubt_proto::VerifiedCertificate,
        server_time_unix_s: i64,
        settings: ConversationSettings,
        changed: bool,
    ) -> Result<(), ClientError> {
        if self.load_settings(group)? == settings {
            return Ok(());
        }
        self.save_settings(group, settings)?;
        if !changed {
            return Ok(());
        }
        let user = sender.body().user.clone();
        self.store_message(
            group,
            &settings_event(seq, user, sender.body().device_id, server_time_unix_s, settings),
        )
    }

    /// Sets how many days of history this conversation shares with members added later (0:
    /// off). Every member sees the change, as an event, and it applies to whoever adds
    /// someone next. Refused beyond the organisation's `group_history_sharing_max_days`.
    pub async fn set_share_history(
        &mut self,
        conversation: &Conversation,
        days: u32,
    ) -> Result<(), ClientError> {
        self.check_share_history(days)?;
        if conversation.peer.is_some() {
            return Err(ClientError::Server(redoubt_proto::ErrorBody::new(
                ErrorCode::InvalidArgument,
                "a direct conversation has nobody to share history with",
            )));
        }
        self.sync_group(&conversation.group_id).await?;
        let settings = ConversationSettings {
            share_history_days: days,
        };
        let seq = self
            .send_body(
                &conversation.group_id,
                &AppBody::Settings {
                    settings,
                    changed: true,
                },
            )
            .await?;
        self.save_settings(&conversation.group_id, settings)?;
        let event = settings_event(seq, self.user.clone(), self.device_id, unix_now(), settings);
        self.store_message(&conversation.group_id, &event)?;
        self.advance_cursor_past_own(&conversation.group_id, seq)
    }

    /// Refuses a sharing span longer than the organisation's policy allows, naming it.
    pub(super) fn check_share_history(&self, days: u32) -> Result<(), ClientError> {
        let cap = self.session.policy().group_history_sharing_max_days;
        if days > cap {
            let why = if cap == 0 {
                "the organisation's policy group_history_sharing_max_days forbids sharing history with new members"
                    .to_owned()
            } else {
                format!(
                    "the organisation's policy group_history_sharing_max_days allows at most {cap} days of shared history"
                )
            };
            return Err(ClientError::Server(redoubt_proto::ErrorBody::new(
                ErrorCode::PolicyViolation,
                why,
            )));
        }
        Ok(())
    }

    /// Sends the conversation's settings when they are not the default (after an add, so
    /// new members learn them).
    pub(super) async fn send_settings(&mut self, group: &GroupId) -> Result<(), ClientError> {
        let settings = self.load_settings(group)?;
        if settings != ConversationSettings::default() {
            let body = AppBody::Settings {
                settings,
                changed: false,
            };
            self.send_body(group, &body).await?;
        }
        Ok(())
    }

    /// This device's own devices as the server lists them, with their history state.
    async fn own_devices(&mut self) -> Result<Vec<DeviceSummary>, ClientError> {
        match self.call_repeatable(Request::OwnDevices).await? {
            Response::Devices(devices) => Ok(devices),
            _ => Err(ClientError::Protocol("unexpected response to OwnDevices".into())),
        }
    }

    /// Sends the user's history to each new device of the user that waits for it, unless
    /// another device took the job (or the policy says no). Runs at the end of a sync, after
    /// the new devices were added to the conversations.
    pub(super) async fn send_history_to_new_devices(&mut self) -> Result<(), ClientError> {
        // A new device announced itself while this sync waited for answers.
        let announced = self
            .session
            .connection()
            .take_events(|event| matches!(event, redoubt_proto::Event::DeviceReady { .. }));
        self.history_due |= announced > 0;
        let policy = self.session.policy().clone();
        if !self.history_due || !policy.history_transfer {
            return Ok(());
        }
        let devices = self.own_devices().await?;
        self.history_due = false;
        let waiting_itself = devices.iter().any(|d| {
            d.device_id == self.device_id
                && d.history
                    .as_ref()
                    .is_some_and(|h| h.state != HistoryState::Received)
        });
        if waiting_itself {
            return Ok(());
        }
        let now = unix_now();
        for device in &devices {
            let Some(history) = &device.history else { continue };
            let mine_or_open = match history.state {
                HistoryState::Waiting => true,
                // Ours, interrupted (a crash): start again. Another's: the server decides
                // whether its claim lapsed.
                HistoryState::Sending => true,
                HistoryState::Sent | HistoryState::Received => false,
            };
            if device.device_id == self.device_id
                || !mine_or_open
                || device.revoked_at_unix_s.is_some()
                || !device.approved
            {
                continue;
            }
            let since = now - i64::from(policy.history_transfer_days) * 86_400;
            let selection = self.select_history(device.device_id, None, since)?;
            let except: Vec<DeviceId> = devices
                .iter()
                .map(|d| d.device_id)
                .filter(|d| *d != device.device_id)
                .collect();
            match self
                .transfer_history(device.device_id, self.user.clone(), except, true, selection)
                .await
            {
                Ok(Some(messages)) => {
                    tracing::info!(device_id = %device.device_id, messages, "history sent to a new device");
                }
                // Another device has the job, or this one cannot reach it yet: look again.
                Ok(None) => self.history_due = true,
                Err(error) => {
                    self.history_due = true;
                    tracing::warn!(device_id = %device.device_id, %error, "could not send history to a new device");
                }
            }
        }
        Ok(())
    }

    /// After adding `users` to a conversation that shares its history: sends each of their
    /// new devices the shared span (the setting capped by this device's policy).
    pub(super) async fn share_history_with(
        &mut self,
        conversation: &Conversation,
        added: &[(UserName, DeviceId)],
    ) -> Result<(), ClientError> {
        let days = self
            .load_settings(&conversation.group_id)?
            .share_history_days
            .min(self.session.policy().group_history_sharing_max_days);
        if days == 0 {
            return Ok(());
        }
        let since = unix_now() - i64::from(days) * 86_400;
        for (user, device) in added {
            if *user == self.user {
                // The user's own new devices get the user's whole history instead.
                continue;
            }
            let selection = self.select_history(*device, Some(&conversation.group_id), since)?;
            let except = match self
                .call_repeatable(Request::UserDevices {
                    users: vec![user.clone()],
                })
                .await?
            {
                Response::UserDevices(devices) => devices
                    .into_iter()
                    .map(|d| d.device_id)
                    .filter(|d| d != device)
                    .collect(),
                _ => return Err(ClientError::Protocol("unexpected response to UserDevices".into())),
            };
            if let Err(error) = self
                .transfer_history(*device, user.clone(), except, false, selection)
                .await
            {
                tracing::warn!(device_id = %device, %error, "could not share the conversation's history");
            }
        }
        Ok(())
    }

    /// The conversations `target` is a member of (or just `only`), with the time from which
    /// their messages go.
    fn select_history(
        &self,
        target: DeviceId,
        only: Option<&GroupId>,
        since_unix_s: i64,
    ) -> Result<Selection, ClientError> {
        let mailbox = self.mailbox()?.map(|m| m.group_id);
        let mut conversations = Vec::new();
        for conversation in self.conversations()? {
            if conversation.removed
                || Some(conversation.group_id) == mailbox
                || only.is_some_and(|g| *g != conversation.group_id)
            {
                continue;
            }
            if self.members(&conversation)?.iter().any(|m| m.device_id == target) {
                conversations.push((conversation, since_unix_s));
            }
        }
        Ok(Selection { conversations })
    }

    /// Makes a transfer group with `target`, uploads the selection in parts and sends their
    /// keys to it. `except`: the other devices of `target`'s user (so the claimed key
    /// package is `target`'s). Returns the messages sent, or `None` when another device has
    /// the job or `target` cannot be reached yet.
    async fn transfer_history(
        &mut self,
        target: DeviceId,
        target_user: UserName,
        mut except: Vec<DeviceId>,
        own: bool,
        selection: Selection,
    ) -> Result<Option<u32>, ClientError> {
        let parts = self.history_parts(&selection)?;
        if parts.len() > HISTORY_PARTS_MAX {
            return Err(ClientError::Protocol(format!(
                "the history is {} parts; at most {HISTORY_PARTS_MAX} go in one transfer",
                parts.len()
            )));
        }
        let messages: u32 = parts.iter().map(|(_, count)| *count).sum();

        let group_id = self.create_transfer_group().await?;
        except.push(self.device_id);
        let package = self
            .claim(vec![target_user], except)
            .await?
            .into_iter()
            .map(|(_, package)| package)
            .find(|package| {
                package
                    .as_key_package()
                    .and_then(|kp| self.identity.device_id(kp.signing_identity()).ok())
                    == Some(target)
            });
        let Some(package) = package else {
            tracing::info!(device_id = %target, "no key package of that device yet; history waits");
            return Ok(None);
        };
        let begin = Request::HistoryBegin {
            target,
            group_id,
            own,
        };
        match self.call_repeatable(begin).await {
            Ok(_) => {}
            Err(error) if matches!(error.code(), Some(ErrorCode::NotFound | ErrorCode::AlreadyExists)) => {
                tracing::info!(device_id = %target, %error, "history not sent from here");
                return Ok(None);
            }
            Err(error) => return Err(error),
        }
        self.commit_with(&group_id, move |group| {
            group.commit_builder().add_member(package.clone())?.build()
        })
        .await?;

        let mut offer = HistoryOffer {
            parts: Vec::with_capacity(parts.len()),
            messages,
        };
        for (index, (bytes, _)) in parts.into_iter().enumerate() {
            let length = bytes.len() as u64;
            let part = crate::attachment::send_blob(
                &mut self.session,
                &group_id,
                format!("history-{index}"),
                bytes.as_slice(),
                length,
                |_, _| {},
            )
            .await?;
            offer.parts.push(part);
        }
        crate::crash_point("history.before-offer");
        self.send_body(&group_id, &AppBody::History(offer)).await?;
        if own {
            self.call_repeatable(Request::HistorySent { target, messages })
                .await?;
        }
        self.retire_transfer_group(&group_id)?;
        Ok(Some(messages))
    }

    /// A new MLS group with this device alone, known to the server, marked as a transfer.
    async fn create_transfer_group(&mut self) -> Result<GroupId, ClientError> {
        let group_id = self.create_group_alone().await?;
        self.mark_transfer_group(&group_id)?;
        self.save_conversation(&Conversation {
            group_id,
            name: "history transfer".to_owned(),
            peer: None,
            cursor: 0,
            removed: false,
        })?;
        Ok(group_id)
    }

    /// Stops reading a transfer group whose work is done.
    fn retire_transfer_group(&self, group: &GroupId) -> Result<(), ClientError> {
        if let Some(mut conversation) = self.load_conversation(group)? {
            conversation.removed = true;
            self.save_conversation(&conversation)?;
        }
        Ok(())
    }

    /// The selection encoded in parts of at most [`HISTORY_PART_BYTES_MAX`], each with the
    /// number of messages it holds.
    fn history_parts(&self, selection: &Selection) -> Result<Vec<(Vec<u8>, u32)>, ClientError> {
        let mut parts = Vec::new();
        let mut part = HistoryPart {
            conversations: Vec::new(),
        };
        let mut fill = 0usize;
        let mut count = 0u32;
        for (conversation, since) in &selection.conversations {
            let header = HistoryConversation {
                group_id: conversation.group_id,
                name: conversation.name.clone(),
                peer: conversation.peer.clone(),
                settings: self.load_settings(&conversation.group_id)?,
                messages: Vec::new(),
            };
            part.conversations.push(header.clone());
            // The conversation's receipts in one read, not one per message.
            let mut receipts = self.all_receipts(&conversation.group_id)?;
            for message in self.messages(conversation)? {
                if message.sent_at_unix_s.min(message.server_time_unix_s) < *since {
                    continue;
                }
                let receipts = receipts.remove(&message.seq).unwrap_or_default();
                let entry = HistoryMessage {
                    seq: message.seq,
                    sender_user: message.sender_user,
                    sender_device: message.sender_device,
                    sent_at_unix_s: message.sent_at_unix_s,
                    server_time_unix_s: message.server_time_unix_s,
                    text: message.text,
                    attachment: message.attachment,
                    event: message.event,
                    delivered: receipts.delivered.into_iter().collect(),
                    read: receipts.read.into_iter().collect(),
                };
                let size = postcard::to_stdvec(&entry).map_err(storage_error)?.len();
                if fill + size > PART_FILL_BYTES && count > 0 {
                    parts.push((part.encode(), count));
                    part = HistoryPart {
                        conversations: vec![header.clone()],
                    };
                    fill = 0;
                    count = 0;
                }
                fill += size;
                count += 1;
                if let Some(last) = part.conversations.last_mut() {
                    last.messages.push(entry);
                }
            }
        }
        if count > 0 || parts.is_empty() {
            parts.push((part.encode(), count));
        }
        Ok(parts)
    }

    /// Every receipt recorded in a conversation, by message.
    fn all_receipts(&self, group: &GroupId) -> Result<std::collections::HashMap<u64, Receipts>, ClientError> {
        let prefix = format!("rcpt/{group}/");
        self.data
            .get_by_prefix(&prefix)
            .map_err(storage_error)?
            .into_iter()
            .filter_map(|(key, value)| {
                let seq = key.strip_prefix(&prefix)?.parse().ok()?;
                Some(
                    postcard::from_bytes(&value)
                        .map(|r| (seq, r))
                        .map_err(storage_error),
                )
            })
            .collect()
    }

    /// Keeps an offer that arrived in a transfer group, to be stored by
    /// [`Self::import_history`]. Only the group's creator may send one, and only to a
    /// device that is the group's one other member.
    pub(super) fn receive_offer(
        &self,
        group: &GroupId,
        sender: &redoubt_proto::VerifiedCertificate,
        offer: HistoryOffer,
    ) -> Result<bool, ClientError> {
        if offer.parts.len() > HISTORY_PARTS_MAX
            || offer.parts.iter().any(|p| p.bytes > HISTORY_PART_BYTES_MAX)
        {
            tracing::warn!(group_id = %group, "history offer refused: too large");
            return Ok(false);
        }
        let members = self.load_group(group)?.roster().members().len();
        if members != 2 {
            tracing::warn!(group_id = %group, members, "history offer refused: not a two-device group");
            return Ok(false);
        }
        self.mark_transfer_group(group)?;
        let incoming = Incoming {
            offer,
            sender_user: sender.body().user.clone(),
            sender_device: sender.body().device_id,
            parts_done: 0,
        };
        let bytes = postcard::to_stdvec(&incoming).map_err(storage_error)?;
        self.data
            .insert(&incoming_key(group), &bytes)
            .map_err(storage_error)?;
        Ok(true)
    }

    /// Stores every history offer received and not yet stored, part by part (a restart
    /// resumes where it stopped), then tells the server, which deletes the blobs.
    pub(super) async fn import_history(&mut self) -> Result<(), ClientError> {
        for (key, value) in self.data.get_by_prefix("histin/").map_err(storage_error)? {
            let Some(group) = key.strip_prefix("histin/").and_then(super::parse_group_id) else {
                continue;
            };
            let mut incoming: Incoming = postcard::from_bytes(&value).map_err(storage_error)?;
            let parts = incoming.offer.parts.clone();
            for (index, part) in parts.iter().enumerate().skip(incoming.parts_done as usize) {
                let mut bytes = Vec::with_capacity(usize::try_from(part.bytes).unwrap_or(0));
                crate::attachment::receive_blob(&mut self.session, part, &mut bytes, |_, _| {}).await?;
                match HistoryPart::decode(&bytes) {
                    Ok(decoded) => self.store_history_part(&incoming, decoded)?,
                    Err(error) => tracing::warn!(group_id = %group, index, %error, "history part skipped"),
                }
                crate::crash_point("history.after-part");
                incoming.parts_done = u32::try_from(index + 1).unwrap_or(u32::MAX);
                let bytes = postcard::to_stdvec(&incoming).map_err(storage_error)?;
                self.data.insert(&key, &bytes).map_err(storage_error)?;
            }
            match self
                .call_repeatable(Request::HistoryReceived { group_id: group })
                .await
            {
                Ok(_) => {}
                // The server lost track of the transfer (its group was replaced): nothing
                // is left for it to delete.
                Err(error) if error.code() == Some(ErrorCode::NotFound) => {
                    tracing::info!(group_id = %group, %error, "history stored; the server knew no transfer");
                }
                Err(error) => return Err(error),
            }
            self.data.delete(&key).map_err(storage_error)?;
            self.retire_transfer_group(&group)?;
            tracing::info!(group_id = %group, messages = incoming.offer.messages, "history stored");
        }
        Ok(())
    }

    /// Stores one part's messages that this device does not hold yet, in one vault
    /// transaction per conversation. A conversation is taken only if this device is in
    /// it and — when the history comes from another user, who shares a conversation's
    /// history — the sending device is a member too.
    fn store_history_part(&self, incoming: &Incoming, part: HistoryPart) -> Result<(), ClientError> {
        let own = incoming.sender_user == self.user;
        for shared in part.conversations {
            let Some(mut conversation) = self.load_conversation(&shared.group_id)? else {
                continue;
            };
            if conversation.removed || self.is_transfer_group(&shared.group_id)? {
                continue;
            }
            let members = self.members(&conversation)?;
            let sender_is_member = members.iter().any(|m| m.device_id == incoming.sender_device);
            if !own && !sender_is_member {
                tracing::warn!(group_id = %shared.group_id, "shared history refused: the sender is not a member");
                continue;
            }
            // A conversation joined a moment ago may not have its name yet.
            if own && conversation.name == placeholder_name(&shared.group_id) {
                conversation.name = shared.name.clone();
                conversation.peer = shared.peer.clone();
                self.save_conversation(&conversation)?;
            }
            if own && self.load_settings(&shared.group_id)? == ConversationSettings::default() {
                self.save_settings(&shared.group_id, shared.settings)?;
            }
            let messages: Vec<(StoredMessage, Receipts)> = shared
                .messages
                .into_iter()
                .map(|message| {
                    let receipts = Receipts {
                        delivered: message.delivered.into_iter().collect(),
                        read: message.read.into_iter().collect(),
                    };
                    let stored = StoredMessage {
                        seq: message.seq,
                        sender_user: message.sender_user,
                        sender_device: message.sender_device,
                        sent_at_unix_s: message.sent_at_unix_s,
                        server_time_unix_s: message.server_time_unix_s,
                        text: message.text,
                        attachment: message.attachment,
                        history: true,
                        event: message.event,
                    };
                    (stored, receipts)
                })
                .collect();
            // A message this device already holds (read live, or from an earlier
            // attempt) stays as it is, with its receipts: every message once.
            super::local_search::store_missing(&self.data, &shared.group_id, &messages)?;
        }
        Ok(())
    }
}

/// The name a conversation has between joining it and learning its real name.
pub(super) fn placeholder_name(group: &GroupId) -> String {
    group.to_string()[..12].to_owned()
}

fn settings_event(
    seq: u64,
    user: UserName,
    device: DeviceId,
    at_unix_s: i64,
    settings: ConversationSettings,
) -> StoredMessage {
    let text = match settings.share_history_days {
        0 => format!("{user} turned off sharing history with new members"),
        1 => format!("{user} set this conversation to share the last day of history with new members"),
        days => {
            format!("{user} set this conversation to share the last {days} days of history with new members")
        }
    };
    StoredMessage {
        seq,
        sender_user: user,
        sender_device: device,
        sent_at_unix_s: at_unix_s,
        server_time_unix_s: at_unix_s,
        text,
        attachment: None,
        history: false,
        event: true,
    }
}
