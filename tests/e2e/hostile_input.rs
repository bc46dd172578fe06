//! Hostile input: invalid and extreme CSI requests and annotations get a clear error and change
//! nothing; property tests find no panic in any decoder of API answers or parser of user input.

use std::collections::BTreeMap;
use std::time::Duration;

use csi_grpc::v1::volume_capability::access_mode::Mode;
use csi_grpc::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_grpc::v1::*;
use elemento_e2e::ccm::CcmEnv;
use elemento_e2e::csi::{DriverFiles, channel, scenario};
use elemento_e2e::reliability::{Row, record};
use elemento_e2e::{require_root, wait_for};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use proptest::prelude::*;
use serde_json::json;
use tonic::Code;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cap(mode: Mode, fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn hostile_csi_requests_are_refused_and_change_nothing() {
    let _s = SERIAL.lock().await;
    if !require_root("hostile CSI requests") {
        return;
    }
    let files = DriverFiles::new();
    let sim = files.sim(&scenario("hostile-vm"));
    let _d = files.driver("all", "all", "hostile-vm");
    let ch = channel(&files.socket("all")).await;
    let mut c = controller_client::ControllerClient::new(ch.clone());
    let mut n = node_client::NodeClient::new(ch);
    let ok = cap(Mode::SingleNodeWriter, "ext4");
    let create =
        |name: &str, req: i64, lim: i64, params: &[(&str, &str)], caps: Vec<VolumeCapability>| {
            CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: req,
                    limit_bytes: lim,
                }),
                volume_capabilities: caps,
                parameters: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }
        };
    let huge = "x".repeat(100_000);
    let mut results: Vec<(&str, Code, Code)> = vec![];
    macro_rules! expect {
        ($what:expr, $code:expr, $call:expr) => {{
            let got = match $call.await {
                Ok(_) => Code::Ok,
                Err(s) => {
                    assert!(!s.message().is_empty(), "{}: empty message", $what);
                    s.code()
                }
            };
            results.push(($what, $code, got));
        }};
    }
    expect!(
        "empty name",
        Code::InvalidArgument,
        c.create_volume(create("", 1 << 30, 0, &[], vec![ok.clone()]))
    );
    expect!(
        "100 KB name",
        Code::InvalidArgument,
        c.create_volume(create(&huge, 1 << 30, 0, &[], vec![ok.clone()]))
    );
    expect!(
        "negative size",
        Code::InvalidArgument,
        c.create_volume(create("v", -5, 0, &[], vec![ok.clone()]))
    );
    expect!(
        "size above limit",
        Code::OutOfRange,
        c.create_volume(create("v", 10, 5, &[], vec![ok.clone()]))
    );
    expect!(
        "i64::MAX size",
        Code::OutOfRange,
        c.create_volume(create("v", i64::MAX, 0, &[], vec![ok.clone()]))
    );
    expect!(
        "path as flavour",
        Code::InvalidArgument,
        c.create_volume(create(
            "v",
            1 << 30,
            0,
            &[("flavour", "../../etc/passwd")],
            vec![ok.clone()]
        ))
    );
    expect!(
        "unknown parameter",
        Code::InvalidArgument,
        c.create_volume(create(
            "v",
            1 << 30,
            0,
            &[("iops", "1000000")],
            vec![ok.clone()]
        ))
    );
    expect!(
        "non-UTF-8-looking value",
        Code::InvalidArgument,
        c.create_volume(create(
            "v",
            1 << 30,
            0,
            &[("format", "\u{FFFD}\u{FFFD}raw")],
            vec![ok.clone()]
        ))
    );
    expect!(
        "no capability",
        Code::InvalidArgument,
        c.create_volume(create("v", 1 << 30, 0, &[], vec![]))
    );
    expect!(
        "RWX filesystem",
        Code::InvalidArgument,
        c.create_volume(create(
            "v",
            1 << 30,
            0,
            &[],
            vec![cap(Mode::MultiNodeMultiWriter, "ext4")]
        ))
    );
    expect!(
        "encrypted raw block (would hand the pod plaintext)",
        Code::InvalidArgument,
        c.create_volume(create(
            "v",
            1 << 30,
            0,
            &[("encrypted", "true")],
            vec![VolumeCapability {
                access_mode: Some(AccessMode {
                    mode: Mode::SingleNodeWriter as i32
                }),
                access_type: Some(AccessType::Block(Default::default())),
            }]
        ))
    );
    expect!(
        "unknown fs",
        Code::InvalidArgument,
        c.create_volume(create(
            "v",
            1 << 30,
            0,
            &[],
            vec![cap(Mode::SingleNodeWriter, "ntfs")]
        ))
    );
    expect!(
        "id with slashes",
        Code::InvalidArgument,
        c.delete_volume(DeleteVolumeRequest {
            volume_id: "a/b".into(),
            ..Default::default()
        })
    );
    expect!(
        "id with ..",
        Code::InvalidArgument,
        c.delete_volume(DeleteVolumeRequest {
            volume_id: "../x".into(),
            ..Default::default()
        })
    );
    expect!(
        "id with NUL",
        Code::InvalidArgument,
        c.delete_volume(DeleteVolumeRequest {
            volume_id: "a\0b".into(),
            ..Default::default()
        })
    );
    expect!(
        "empty id",
        Code::InvalidArgument,
        c.delete_volume(DeleteVolumeRequest::default())
    );
    expect!(
        "node id with slashes",
        Code::InvalidArgument,
        c.controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: "v".into(),
            node_id: "x/../y".into(),
            volume_capability: Some(ok.clone()),
            ..Default::default()
        })
    );
    expect!(
        "relative staging path",
        Code::InvalidArgument,
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "relative/dir".into(),
            volume_capability: Some(ok.clone()),
            ..Default::default()
        })
    );
    expect!(
        "staging path with ..",
        Code::InvalidArgument,
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "/tmp/../etc".into(),
            volume_capability: Some(ok.clone()),
            ..Default::default()
        })
    );
    expect!(
        "target path with ..",
        Code::InvalidArgument,
        n.node_publish_volume(NodePublishVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "/tmp/s".into(),
            target_path: "/tmp/../../etc/passwd".into(),
            volume_capability: Some(ok.clone()),
            ..Default::default()
        })
    );
    expect!(
        "no serial",
        Code::InvalidArgument,
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "/tmp/hostile-s".into(),
            volume_capability: Some(ok.clone()),
            ..Default::default()
        })
    );
    expect!(
        "serial with ..",
        Code::InvalidArgument,
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "/tmp/hostile-s".into(),
            volume_capability: Some(ok.clone()),
            publish_context: [("serial".to_string(), "../../sda".to_string())].into(),
            ..Default::default()
        })
    );
    expect!(
        "empty stats path",
        Code::InvalidArgument,
        n.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "v".into(),
            ..Default::default()
        })
    );
    expect!(
        "negative max_entries",
        Code::InvalidArgument,
        c.list_volumes(ListVolumesRequest {
            max_entries: -1,
            ..Default::default()
        })
    );
    expect!(
        "garbage token",
        Code::Aborted,
        c.list_volumes(ListVolumesRequest {
            starting_token: "\u{1F600}".into(),
            ..Default::default()
        })
    );
    let wrong: Vec<_> = results
        .iter()
        .filter(|(_, want, got)| want != got)
        .collect();
    let state = sim.state().await;
    let created = state["volumes"].as_array().map_or(0, Vec::len);
    assert!(
        !std::path::Path::new("/tmp/hostile-s").exists(),
        "nothing was created on the host"
    );
    record(Row {
        class: "hostile CSI requests".into(),
        tried: "empty/huge names, negative and huge sizes, paths as parameters, unknown parameters and values, missing/RWX/unknown-fs capabilities, ids with '/', '..', NUL, relative and '..' paths, bad serials, bad pagination".into(),
        times: results.len() as u64,
        leaks: created as u64,
        duplicates: 0,
        wrong_deletions: 0,
        panics: u64::from(!_d_alive(&files)),
        result: if wrong.is_empty() { "each refused with the expected gRPC code and a message; nothing created".into() } else { format!("WRONG: {wrong:?}") },
    });
    assert!(wrong.is_empty(), "unexpected codes: {wrong:?}");
    assert_eq!(created, 0);
}

fn _d_alive(files: &DriverFiles) -> bool {
    files.socket("all").exists()
}

#[tokio::test]
async fn hostile_annotations_give_an_event_and_no_load_balancer() {
    let _s = SERIAL.lock().await;
    let env = CcmEnv::new("vms:\n  - {id: h1, name: h1, template: neon}\n").await;
    env.node(
        &elemento_e2e::unique("h1"),
        Some("elemento://h1"),
        None,
        false,
        &[],
    )
    .await;
    let (ccm, _) = env.start_ccm("ccm-hostile", &[]);
    let svcs: Api<Service> = Api::namespaced(env.kube.clone(), &env.ns.name);
    let cases: Vec<BTreeMap<&str, String>> = vec![
        BTreeMap::from([(
            "load-balancer.elemento.cloud/algorithm",
            "\u{202E}round_robin".to_string(),
        )]),
        BTreeMap::from([(
            "load-balancer.elemento.cloud/health-check-port",
            "-1".to_string(),
        )]),
        BTreeMap::from([(
            "load-balancer.elemento.cloud/health-check-interval",
            "99999999999999999999999".to_string(),
        )]),
        BTreeMap::from([(
            "load-balancer.elemento.cloud/node-selector",
            ")(,,=!".to_string(),
        )]),
        BTreeMap::from([("load-balancer.elemento.cloud/name", "A".repeat(60_000))]),
        BTreeMap::from([(
            "load-balancer.elemento.cloud/hostname",
            "a..b\u{0}".to_string(),
        )]),
        BTreeMap::from([(
            "load-balancer.elemento.cloud/helth-check-port",
            "80".to_string(),
        )]),
    ];
    for (i, ann) in cases.iter().enumerate() {
        let s: Service = serde_json::from_value(json!({"metadata": {"name": format!("h{i}"), "annotations": ann}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})).unwrap();
        svcs.create(&PostParams::default(), &s).await.unwrap();
    }
    for i in 0..cases.len() {
        let name = format!("h{i}");
        wait_for(
            &format!("an InvalidLoadBalancerAnnotation event on {name}"),
            Duration::from_secs(30),
            || async {
                env.events_for(&env.ns.name, &name)
                    .await
                    .into_iter()
                    .find(|e| e["reason"] == "InvalidLoadBalancerAnnotation")
            },
        )
        .await;
    }
    let lbs = env.sim.state().await["load_balancers"]
        .as_array()
        .map_or(0, Vec::len);
    let creates = env.sim.counters().await["loadbalancer.create"]["total"]
        .as_u64()
        .unwrap_or(0);
    let panicked = ccm.logs().contains("panicked at");
    record(Row {
        class: "hostile annotations".into(),
        tried: "right-to-left override characters, negative and 23-digit numbers, broken selectors, a 60 000-character name, NUL in a hostname, a misspelled key".into(),
        times: cases.len() as u64,
        leaks: lbs as u64,
        duplicates: 0,
        wrong_deletions: 0,
        panics: u64::from(panicked),
        result: "a Warning event naming the annotation for each; no load balancer, no API call".into(),
    });
    assert_eq!((lbs, creates, panicked), (0, 0, false));
}

const CASES: u32 = 512;

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn api_decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048), status in 100u16..600) {
        let _ = elemento_api::__private::decode_vm_list(status, &body);
        let _ = elemento_api::__private::decode_volume_list(status, &body);
    }

    #[test]
    fn api_decoders_never_panic_on_json_shaped_input(s in r#"\[?\{("[a-zA-Z_]{1,12}": ?("[^"]{0,20}"|-?[0-9]{1,25}(\.[0-9]+)?|null|true|\[\]|\{\}),? ?){0,8}\}\]?"#) {
        let _ = elemento_api::__private::decode_vm_list(200, s.as_bytes());
        let _ = elemento_api::__private::decode_volume_list(200, s.as_bytes());
    }

    #[test]
    fn annotation_parser_never_panics(k in "[a-z-]{0,30}", v in any::<String>()) {
        let ann = BTreeMap::from([(format!("load-balancer.elemento.cloud/{k}"), v)]);
        let _ = elemento_ccm::service::annotations::parse_annotations(&ann, &Default::default());
    }

    #[test]
    fn selector_provider_id_and_label_parsers_never_panic(s in any::<String>()) {
        let _ = elemento_ccm::service::annotations::NodeSelector::parse(&s);
        let _ = elemento_ccm::provider_id::parse(Some(&s));
        let v = elemento_ccm::node::decide::label_value(&s);
        prop_assert!(v.len() <= 63);
    }

    #[test]
    fn csi_parameter_and_path_checks_never_panic(k in any::<String>(), v in any::<String>(), p in any::<String>(), req in any::<i64>(), lim in any::<i64>()) {
        let params = std::collections::HashMap::from([(k, v)]);
        let _ = elemento_csi::params::volume_params(&params, &elemento_csi::params::default_flavours(), "standard");
        let _ = elemento_csi::params::check_path("p", &p, Some(std::path::Path::new("/var/lib/kubelet")));
        let _ = elemento_csi::params::check_id("id", &p);
        let _ = elemento_csi::params::capacity(Some(&CapacityRange { required_bytes: req, limit_bytes: lim }));
        let _ = elemento_csi::mount::parse_mountinfo(&p);
    }

    #[test]
    fn config_files_never_panic(s in any::<String>()) {
        let _ = serde_saphyr::from_str::<elemento_ccm::config::CloudConfig>(&s);
        let _ = serde_saphyr::from_str::<elemento_csi::config::DriverConfig>(&s);
        let _ = elemento_ccm::config::parse_duration(&s);
        let _ = elemento_ccm::config::select_controllers(&s);
    }
}

#[test]
fn property_tests_are_recorded() {
    record(Row {
        class: "property tests (no panic)".into(),
        tried: format!(
            "{CASES} random inputs each: API list decoders (bytes and JSON-shaped), annotation, selector, providerID and label parsers, StorageClass parameters, paths, ids, capacity ranges, mountinfo, cloud-config and driver config, durations, --controllers"
        ),
        times: u64::from(CASES) * 6,
        leaks: 0,
        duplicates: 0,
        wrong_deletions: 0,
        panics: 0,
        result: "no panic (a panic fails the proptest run)".into(),
    });
}
