//! `redoubt search`: this device's own chat history (messages and attachment file names),
//! searched in its encrypted local index; nothing is asked of the server.

use anyhow::{Context, Result};
use clap::Args;
use redoubt_client::search::{HITS_MAX, SearchQuery};
use redoubt_client::{Conversation, Messenger, StoredMessage};
use redoubt_proto::UserName;
use serde_json::json;

use crate::output::{Output, print_json, say, time};

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// Words to find, all of them, in any case; a word also finds longer words it begins
    /// (from two letters: `budg` finds "budget").
    #[arg(required = true, value_name = "QUERY")]
    query: Vec<String>,
    /// Only this conversation (a group's name, or the other user of a direct one).
    #[arg(long, value_name = "NAME")]
    conversation: Option<String>,
    /// Only messages from this user.
    #[arg(long, value_name = "USER")]
    from: Option<String>,
    /// Most messages shown, newest first.
    #[arg(long, default_value_t = 50, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=HITS_MAX as u64))]
    limit: u64,
}

/// Searches, then prints the hits newest first: one line each, or with `--json` an array.
pub(crate) fn run(messenger: &Messenger, args: SearchArgs, out: &Output) -> Result<()> {
    let group = match &args.conversation {
        Some(name) => Some(crate::conversation(messenger, name)?.group_id),
        None => None,
    };
    let from = match &args.from {
        Some(user) => Some(UserName::parse(user).with_context(|| format!("--from {user:?}"))?),
        None => None,
    };
    let query = SearchQuery {
        text: args.query.join(" "),
        group,
        from,
        limit: usize::try_from(args.limit).unwrap_or(HITS_MAX),
    };
    let hits = messenger.search(&query)?;
    print(&hits, out);
    Ok(())
}

fn print(hits: &[(Conversation, StoredMessage)], out: &Output) {
    if out.is_json() {
        let hits: Vec<serde_json::Value> = hits
            .iter()
            .map(|(conversation, m)| {
                json!({
                    "conversation": conversation.name,
                    "group_id": conversation.group_id.to_string(),
                    "message_id": m.id(conversation),
                    "sender": m.sender_user.as_str(),
                    "sent_at": time(m.sent_at_unix_s),
                    "sent_at_unix_s": m.sent_at_unix_s,
                    "text": m.text,
                    "attachment": m.attachment.as_ref().map(|a| json!({ "name": a.name, "bytes": a.bytes })),
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(hits));
        return;
    }
    if hits.is_empty() {
        say!("No message found.");
        return;
    }
    for (conversation, m) in hits {
        say!(
            "[{}] {} · {}: {}  #{}",
            time(m.sent_at_unix_s),
            conversation.name,
            m.sender_user,
            m.text,
            m.id(conversation)
        );
    }
}
