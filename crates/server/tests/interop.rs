#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Standard MLS on the wire: a second, independent MLS implementation (openmls) joins a group
//! made by Redoubt's client (mls-rs) through the real server, and both read each other's
//! messages.

mod support;

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    Capabilities, Ciphersuite, Credential, CredentialType, CredentialWithKey, KeyPackage, MlsGroup,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, OpenMlsProvider as _,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, SignatureScheme, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand_core::{OsRng, RngCore};
use redoubt_client::{Messenger, Session};
use redoubt_mls::AppBody;
use redoubt_proto::{Bytes, GroupSubmit, Request, Response, UserName};
use support::{TestServer, admin_session, enroll};

/// Redoubt's one ciphersuite (0x0001), as openmls names it.
const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

#[tokio::test]
async fn openmls_member_joins_a_redoubt_group_and_both_read_each_other() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;

    // 1. Two users enrol through the normal activation flow.
    let issued = admin.admin_user_add(user("alice"), None).await.unwrap();
    let alice_profile = enroll(profiles.path(), "alice-1", &issued.code).await;
    let issued = admin.admin_user_add(user("olivia"), None).await.unwrap();
    let olivia_profile = enroll(profiles.path(), "olivia-1", &issued.code).await;
    let mut alice = Messenger::open(&alice_profile).await.unwrap();

    // 2. Olivia is driven by openmls, with the device key and certificate Redoubt issued her.
    let seed = olivia_profile.device_key_seed_for_tests().to_vec();
    let olivia_public = olivia_profile.certificate_body().device_public_key.0;
    let provider = OpenMlsRustCrypto::default();
    // openmls's Ed25519 signer takes the bare 32-byte seed (mls-rs wants seed ‖ public).
    let signer = SignatureKeyPair::from_raw(SignatureScheme::ED25519, seed, olivia_public.to_vec());
    let credential = CredentialWithKey {
        credential: Credential::new(
            CredentialType::Other(redoubt_mls::CREDENTIAL_TYPE),
            olivia_profile.certificate().to_vec(),
        ),
        signature_key: olivia_public.to_vec().into(),
    };
    // Every leaf must support the credential type in use (members' and the external sender's).
    let capabilities = Capabilities::builder()
        .credentials(vec![CredentialType::Other(redoubt_mls::CREDENTIAL_TYPE)])
        .build();
    let bundle = KeyPackage::builder()
        .leaf_node_capabilities(capabilities)
        .build(CIPHERSUITE, &provider, &signer, credential)
        .expect("openmls builds a key package");
    let key_package = MlsMessageOut::from(bundle.key_package().clone())
        .to_bytes()
        .unwrap();

    // The server validates the openmls key package with mls-rs before accepting it.
    let mut olivia = Session::open(&olivia_profile).await.unwrap();
    let published = olivia
        .connection()
        .call(Request::KeyPackagesPublish {
            key_packages: vec![key_package],
            last_resort: None,
        })
        .await
        .expect("the server accepts an openmls key package");
    assert!(
        matches!(published, Response::KeyPackagesPublished { available: 1 }),
        "one key package held for olivia: {published:?}"
    );

    // 3. Alice (Redoubt's client, mls-rs) makes a group with olivia and writes to it.
    let conversation = alice
        .create_conversation("interop", &[user("olivia")], false)
        .await
        .expect("alice adds olivia from her openmls key package");
    let members = alice.members(&conversation).unwrap();
    assert_eq!(
        members.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        ["alice", "olivia"],
        "alice's roster holds the openmls leaf"
    );
    assert_eq!(members[1].device_id, olivia_profile.device_id());
    alice.send_text("interop", "hello from mls-rs").await.unwrap();

    // 4. Olivia joins from the Welcome in her inbox.
    let items = match olivia.connection().call(Request::InboxFetch).await.unwrap() {
        Response::Inbox(items) => items,
        other => panic!("unexpected response to InboxFetch: {other:?}"),
    };
    assert_eq!(items.len(), 1, "one Welcome for olivia");
    let item = &items[0];
    assert_eq!(item.group_id, conversation.group_id);
    let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(&item.welcome)
        .expect("the Welcome decodes with openmls")
        .extract()
    else {
        panic!("the inbox item does not hold a Welcome");
    };
    // Redoubt sends handshakes as PublicMessage and application data as PrivateMessage.
    let join_config = MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build();
    let mut group: MlsGroup = StagedWelcome::new_from_welcome(&provider, &join_config, welcome, None)
        .expect("openmls accepts the mls-rs Welcome")
        .into_group(&provider)
        .expect("openmls joins the group");
    assert_eq!(
        group.group_id().as_slice(),
        conversation.group_id.as_bytes(),
        "openmls sees the group id the server assigned"
    );
    assert_eq!(group.members().count(), 2);
    match olivia
        .connection()
        .call(Request::InboxAck { ids: vec![item.id] })
        .await
        .unwrap()
    {
        Response::Done => {}
        other => panic!("unexpected response to InboxAck: {other:?}"),
    }

    // She reads the log after the commit that added her, in order.
    let (entries, last_seq) = match olivia
        .connection()
        .call(Request::GroupFetch {
            group_id: conversation.group_id,
            after_seq: item.joined_seq,
            limit: 100,
        })
        .await
        .unwrap()
    {
        Response::GroupEntries { entries, last_seq } => (entries, last_seq),
        other => panic!("unexpected response to GroupFetch: {other:?}"),
    };
    assert!(
        entries.len() < 100,
        "one page holds the whole log: {}",
        entries.len()
    );
    assert_eq!(entries.last().map(|e| e.seq), Some(last_seq));
    let mut bodies = Vec::new();
    for entry in &entries {
        assert_eq!(
            entry.sender,
            alice_profile.device_id(),
            "seq {} is alice's",
            entry.seq
        );
        let message = MlsMessageIn::tls_deserialize_exact(&entry.message)
            .unwrap_or_else(|e| panic!("seq {} does not decode with openmls: {e:?}", entry.seq))
            .try_into_protocol_message()
            .unwrap_or_else(|e| panic!("seq {} is not a protocol message: {e:?}", entry.seq));
        let processed = group
            .process_message(&provider, message)
            .unwrap_or_else(|e| panic!("openmls cannot process seq {}: {e:?}", entry.seq));
        let sender_credential = processed.credential().clone();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                assert_eq!(
                    sender_credential.credential_type(),
                    CredentialType::Other(redoubt_mls::CREDENTIAL_TYPE)
                );
                assert_eq!(
                    sender_credential.serialized_content(),
                    alice_profile.certificate(),
                    "seq {} is signed by alice's certified leaf",
                    entry.seq
                );
                let body =
                    AppBody::decode(&app.into_bytes()).unwrap_or_else(|e| panic!("seq {}: {e}", entry.seq));
                bodies.push(body);
            }
            ProcessedMessageContent::StagedCommitMessage(commit) => {
                group.merge_staged_commit(&provider, *commit).unwrap();
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                group
                    .store_pending_proposal(provider.storage(), *proposal)
                    .unwrap();
            }
            other => panic!("unexpected content at seq {}: {other:?}", entry.seq),
        }
    }
    assert_eq!(bodies.len(), 2, "a Meta and a Text: {bodies:?}");
    assert_eq!(
        bodies[0],
        AppBody::Meta {
            name: "interop".into(),
            direct: false
        },
        "the conversation's name arrives encrypted"
    );
    assert!(
        matches!(&bodies[1], AppBody::Text { text, .. } if text == "hello from mls-rs"),
        "openmls reads alice's text: {:?}",
        bodies[1]
    );
    assert_eq!(
        group.epoch().as_u64(),
        alice.epoch(&conversation).unwrap(),
        "both implementations are in the same epoch"
    );

    // 5. Olivia replies with openmls; the server accepts its PrivateMessage.
    let reply = AppBody::Text {
        text: "hello from openmls".into(),
        sent_at_unix_s: 0,
    };
    let message = group
        .create_message(&provider, &signer, &reply.encode())
        .expect("openmls encrypts")
        .to_bytes()
        .unwrap();
    let mut client_message_id = [0u8; 16];
    OsRng.fill_bytes(&mut client_message_id);
    let submitted = olivia
        .connection()
        .call(Request::GroupSubmit(GroupSubmit {
            group_id: conversation.group_id,
            client_message_id: Bytes(client_message_id),
            message,
            welcome: None,
        }))
        .await
        .expect("the server accepts an openmls application message");
    let reply_seq = match submitted {
        Response::Submitted {
            seq,
            duplicate: false,
        } => seq,
        other => panic!("unexpected response to GroupSubmit: {other:?}"),
    };
    assert_eq!(reply_seq, last_seq + 1, "appended after alice's text");

    // 6. Alice (mls-rs) reads olivia's reply, attributed to olivia's certified device.
    let report = alice.sync().await.unwrap();
    assert_eq!(
        (report.messages, report.failures),
        (1, 0),
        "alice processed the openmls message"
    );
    let conversation = alice
        .conversation("interop")
        .unwrap()
        .expect("alice still has the conversation");
    let messages = alice.messages(&conversation).unwrap();
    let got: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.sender_user.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [("alice", "hello from mls-rs"), ("olivia", "hello from openmls")],
        "alice's view of the conversation"
    );
    let from_olivia = &messages[1];
    assert_eq!(from_olivia.seq, reply_seq);
    assert_eq!(from_olivia.sender_device, olivia_profile.device_id());

    olivia.close().await;
    admin.close().await;
    server.stop().await;
}
