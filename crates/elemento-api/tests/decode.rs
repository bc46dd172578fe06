//! Decoding of the response samples documented in shared/reference/elemento-api.md, and of the
//! malformed answers a daemon may send: never a panic, never a whole list lost to one bad item.

use elemento_api::__private::{decode_lb_list, decode_vm_list, decode_volume_list};
use elemento_api::types::PowerState;

#[test]
fn vm_status_sample_with_ramsize_in_gb() {
    let body = br#"[{"uniqueID":"u-1","serverurl":"https://host:7777","req_json":{"vm_name":"node-1","slots":2,
        "overprovision":2,"allowSMT":false,"arch":"X86_64","flags":["sse2"],"ramsize":2,"reqECC":false,
        "os_family":"linux","os_flavour":"ubuntu","volumes":[{"vid":"vol-1"},{"volumeID":"vol-2"}],"pcidevs":[],
        "netdevs":[],"creation_date":"2025-01-01","network_config":{"ipv4":"10.1.2.3","mac":"52:54:00:aa:bb:cc"},
        "mesos":{"provider":"ovh","price":{"hour":0.1}}}, "states":"shut off", "extra_future_field": {"x": 1}}]"#;
    let vms = decode_vm_list(200, body).unwrap();
    assert_eq!(vms.len(), 1);
    let v = &vms[0];
    assert_eq!(
        (v.id.as_str(), v.name.as_str(), v.slots, v.ram_mib),
        ("u-1", "node-1", 2, 2048)
    );
    assert_eq!(v.ipv4, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(v.provider.as_deref(), Some("ovh"));
    assert_eq!(v.power, PowerState::ShutOff);
    assert_eq!(v.volume_ids, ["vol-1", "vol-2"]);
}

#[test]
fn vm_status_tolerates_strings_missing_fields_and_bad_items() {
    let body = br#"[{"uniqueID":"a","req_json":{"slots":"4","ramsize":"4096","pcidevs":[{"vendor":"10de","quantity":"2"}],
                    "network_config":{"ipv4":"10.0.0.5/24"}}},
                   {"no_id": true}, 17, null,
                   {"uniqueID":"b"}]"#;
    let vms = decode_vm_list(200, body).unwrap();
    assert_eq!(
        vms.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        (vms[0].slots, vms[0].ram_mib, vms[0].gpus),
        (4, 4096, 2),
        "MiB above the threshold stays MiB"
    );
    assert_eq!(vms[0].ipv4, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(vms[1].power, PowerState::Unknown);
}

#[test]
fn lists_accept_204_empty_wrapped_and_ndjson() {
    assert!(decode_vm_list(204, b"").unwrap().is_empty());
    assert!(decode_vm_list(200, b"  ").unwrap().is_empty());
    assert!(decode_vm_list(200, b"null").unwrap().is_empty());
    assert_eq!(
        decode_vm_list(200, br#"{"vms":[{"uniqueID":"x"}]}"#)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        decode_vm_list(200, b"{\"uniqueID\":\"x\"}\n{\"uniqueID\":\"y\"}\n")
            .unwrap()
            .len(),
        2
    );
    assert!(decode_vm_list(200, b"<html>oops</html>").is_err());
    assert!(decode_vm_list(200, b"\xff\xfe\x00garbage").is_err());
    assert!(decode_vm_list(200, b"42").is_err());
}

#[test]
fn volume_sizes_in_bytes_or_gb() {
    let bytes = br#"[{"volumeID":"v1","name":"a","size":8000000000,"format":"raw","bus":"virtio","shareable":false}]"#;
    let gb = br#"[{"volumeID":"v1","name":"a","size":8.0,"format":"raw","bus":"virtio","shareable":"true"}]"#;
    let a = decode_volume_list(200, bytes).unwrap();
    let b = decode_volume_list(200, gb).unwrap();
    assert_eq!(a[0].size_bytes, 8_000_000_000);
    assert_eq!(b[0].size_bytes, 8_000_000_000);
    assert!(b[0].shareable, "\"true\" as a string");
    let created = br#"[{"vid":"v2","name":"b","size":1.125,"img_format":"qcow2"}]"#;
    let c = decode_volume_list(200, created).unwrap();
    assert_eq!(
        (c[0].id.as_str(), c[0].size_bytes, c[0].format.as_deref()),
        ("v2", 1_125_000_000, Some("qcow2"))
    );
}

/// Load-balancer records of the services envelope (§8.1): NDJSON (one line too), a JSON array or
/// a wrapper; the id under `service_uuid`, `uuid` or `id`; the spec in `req` or at the top level.
#[test]
fn load_balancer_records_in_every_listing_shape() {
    let spec = r#"{"name":"k8s-c-1","listeners":[{"protocol":"tcp","port":80,"target_port":30080}],"targets":["vm-1"],"health_check":{"protocol":"tcp","port":0,"interval_seconds":5,"timeout_seconds":3,"retries":3},"algorithm":"round_robin","proxy_protocol":false,"private":false}"#;
    let in_req = format!(
        r#"{{"service_uuid":"lb-1","status":"running","ip":"198.51.100.10","req":{spec}}}"#
    );
    let one_line = decode_lb_list(200, format!("{in_req}\n").as_bytes()).unwrap();
    assert_eq!(one_line.len(), 1, "a single NDJSON line is a one-item list");
    assert_eq!(
        (
            one_line[0].id.as_str(),
            one_line[0].ip.as_deref(),
            one_line[0].spec.targets.as_slice()
        ),
        (
            "lb-1",
            Some("198.51.100.10"),
            ["vm-1".to_string()].as_slice()
        )
    );
    let flat = spec.replacen('{', r#"{"uuid":"lb-2","ip":"198.51.100.11","#, 1);
    let not_ours = r#"{"service_uuid":"kaas-1","cluster_name":"x","status":"running"}"#;
    let ndjson = format!("{in_req}\n{flat}\n{not_ours}\n");
    let ids = |v: Vec<elemento_api::LoadBalancer>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
    assert_eq!(
        ids(decode_lb_list(200, ndjson.as_bytes()).unwrap()),
        ["lb-1", "lb-2"]
    );
    let array = format!("[{in_req},{flat},{not_ours}]");
    assert_eq!(
        ids(decode_lb_list(200, array.as_bytes()).unwrap()),
        ["lb-1", "lb-2"]
    );
    let wrapped = format!(r#"{{"services":[{in_req}]}}"#);
    assert_eq!(
        ids(decode_lb_list(200, wrapped.as_bytes()).unwrap()),
        ["lb-1"]
    );
    assert!(decode_lb_list(204, b"").unwrap().is_empty());
}

#[test]
fn a_single_ndjson_vm_line_is_one_vm() {
    let vms = decode_vm_list(200, b"{\"uniqueID\":\"x\",\"req_json\":{\"volumes\":[]}}\n").unwrap();
    assert_eq!(vms.len(), 1);
}
