#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Keeps docs/protocol.md true: every error code and every enum variant the code defines
//! appears in the document's tables with its wire number.

use redoubt_proto::*;

fn protocol_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md")).unwrap()
}

fn variant_index<T: serde::Serialize>(value: &T) -> u8 {
    // postcard writes the variant index first; every index here is below 128 (one byte).
    postcard::to_stdvec(value).unwrap()[0]
}

#[test]
fn error_code_table_matches_the_code() {
    let doc = protocol_md();
    for code in ErrorCode::ALL {
        let row = format!("| {} | `{}` |", code.to_u16(), code.as_str());
        assert!(doc.contains(&row), "docs/protocol.md lacks the row {row}");
    }
}

#[test]
fn request_and_response_tables_match_the_code() {
    let doc = protocol_md();
    let user = UserName::parse("a").unwrap();
    let requests = [
        (Request::WhoAmI, "WhoAmI"),
        (
            Request::AdminUserAdd {
                user: user.clone(),
                display_name: None,
            },
            "AdminUserAdd",
        ),
        (Request::AdminDeviceAdd { user: user.clone() }, "AdminDeviceAdd"),
        (Request::AdminUserList, "AdminUserList"),
        (Request::AdminDeviceList { user: None }, "AdminDeviceList"),
        (
            Request::Authenticate(AuthenticateRequest {
                certificate: vec![],
                signature: Bytes([0; 64]),
            }),
            "Authenticate",
        ),
        (
            Request::KeyPackagesClaim {
                users: vec![],
                except_devices: vec![],
            },
            "KeyPackagesClaim",
        ),
        (Request::GroupCreate { group_info: vec![] }, "GroupCreate"),
        (Request::GroupList, "GroupList"),
        (Request::InboxFetch, "InboxFetch"),
        (Request::InboxAck { ids: vec![] }, "InboxAck"),
        (Request::UserDevices { users: vec![] }, "UserDevices"),
        (
            Request::BlobUploadFinish {
                blob_id: BlobId::from([0; 16]),
            },
            "BlobUploadFinish",
        ),
        (
            Request::BlobFetch {
                blob_id: BlobId::from([0; 16]),
                index: 0,
            },
            "BlobFetch",
        ),
        (
            Request::GroupAck {
                group_id: GroupId::from([0; 32]),
                seq: 0,
            },
            "GroupAck",
        ),
        (Request::AdminPolicyShow { user: None }, "AdminPolicyShow"),
        (Request::AdminGroupList, "AdminGroupList"),
        (Request::AdminUserImport { users: vec![] }, "AdminUserImport"),
        (
            Request::AdminDeviceRevoke {
                device: DeviceId::from([0; 16]),
            },
            "AdminDeviceRevoke",
        ),
        (
            Request::AdminAuditList {
                after_seq: 0,
                limit: 0,
            },
            "AdminAuditList",
        ),
        (Request::PolicyFetch, "PolicyFetch"),
        (Request::PolicyAck { version: 0 }, "PolicyAck"),
        (Request::CommandsFetch, "CommandsFetch"),
        (Request::CommandAck { command_id: 0 }, "CommandAck"),
        (
            Request::DeviceApprove {
                device: DeviceId::from([0; 16]),
                approval: Signed::sign(
                    &DeviceApproval {
                        org_id: OrgId::from([0; 16]),
                        user: UserName::parse("alice").unwrap(),
                        approver: DeviceId::from([1; 16]),
                        certificate_hash: Bytes([0; 32]),
                        approved_at_unix_s: 0,
                    },
                    &ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
                ),
            },
            "DeviceApprove",
        ),
        (Request::OwnDevices, "OwnDevices"),
        (
            Request::HistoryReceived {
                group_id: GroupId::from([0; 32]),
            },
            "HistoryReceived",
        ),
    ];
    for (request, name) in requests {
        let row = format!("| {} | `{name}` |", variant_index(&request));
        assert!(doc.contains(&row), "docs/protocol.md lacks the request row {row}");
    }
    let responses = [
        (Response::Users(vec![]), "Users"),
        (Response::Devices(vec![]), "Devices"),
        (
            Response::Submitted {
                seq: 0,
                duplicate: false,
            },
            "Submitted",
        ),
        (Response::Inbox(vec![]), "Inbox"),
        (Response::Done, "Done"),
        (
            Response::BlobUploadStarted {
                blob_id: BlobId::from([0; 16]),
            },
            "BlobUploadStarted",
        ),
        (Response::PolicySet { version: 0 }, "PolicySet"),
        (Response::DirectoryGroups(vec![]), "DirectoryGroups"),
        (Response::Imported(vec![]), "Imported"),
        (Response::CommandIssued { command_id: 0 }, "CommandIssued"),
        (Response::Revoked { groups: 0 }, "Revoked"),
        (Response::Commands(vec![]), "Commands"),
    ];
    for (response, name) in responses {
        let row = format!("| {} | `{name}` |", variant_index(&response));
        assert!(
            doc.contains(&row),
            "docs/protocol.md lacks the response row {row}"
        );
    }
    let error = ServerFrame::Error {
        request_id: 0,
        error: ErrorBody::new(ErrorCode::Internal, ""),
    };
    assert!(doc.contains(&format!("| {} | `Error` |", variant_index(&error))));
    let event = ServerFrame::Event(Event::InboxChanged);
    assert!(doc.contains(&format!("| {} | `Event` |", variant_index(&event))));
    assert!(doc.contains(&format!(
        "| {} | `InboxChanged` |",
        variant_index(&Event::InboxChanged)
    )));
    assert!(doc.contains(&format!(
        "| {} | `PolicyChanged` |",
        variant_index(&Event::PolicyChanged { version: 0 })
    )));
    assert!(doc.contains(&format!(
        "| {} | `DeviceReady` |",
        variant_index(&Event::DeviceReady {
            device: DeviceId::from([0; 16])
        })
    )));
}
