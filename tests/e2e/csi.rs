//! The CSI driver: csi-sanity on real loop devices, and the whole PVC lifecycle on the real
//! control plane through csi-provisioner, csi-attacher and csi-resizer. Tests run one at a time.

use std::collections::HashMap;
use std::time::Duration;

use csi_grpc::v1::volume_capability::access_mode::Mode;
use csi_grpc::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_grpc::v1::*;
use elemento_e2e::csi::{CsiCluster, DRIVER, DriverFiles, node_client, scenario};
use elemento_e2e::{require_root, testenv, unique, wait_for};
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn csi_sanity_passes_on_real_loop_devices() {
    csi_sanity(&scenario("sanity-node")).await;
}

/// The same suite with the disk serial of the reference §8.2 (`<4 hex>x<volume name>`), which the
/// attach answer does not give: the node plugin finds each device by the volume's name alone.
#[tokio::test]
async fn csi_sanity_passes_with_name_based_disk_serials() {
    csi_sanity(&format!(
        "wire: {{disk_serial: name}}\n{}",
        scenario("sanity-node")
    ))
    .await;
}

async fn csi_sanity(scenario: &str) {
    let _serial = SERIAL.lock().await;
    if !require_root("csi-sanity") {
        return;
    }
    let files = DriverFiles::new();
    let sim = files.sim(scenario);
    let _driver = files.driver("all", "all", "sanity-node");
    let work = files.dir.path();
    // Sizes on Elemento's 0.125 GB grid: the default 10/11 GiB cannot be created exactly, and
    // csi-sanity compares returned capacities exactly.
    let out = std::process::Command::new(testenv().tool("csi-sanity"))
        .arg(format!("--csi.endpoint={}", files.socket("all").display()))
        .arg(format!(
            "--csi.stagingdir={}",
            work.join("staging").display()
        ))
        .arg(format!("--csi.mountdir={}", work.join("mount").display()))
        .args([
            "--csi.testvolumesize=10000000000",
            "--csi.testvolumeexpandsize=11000000000",
            "--csi.testnodevolumeattachlimit",
            "--ginkgo.no-color",
        ])
        .output()
        .expect("csi-sanity");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text
        .lines()
        .find(|l| l.contains("Passed") && l.contains("Failed"))
        .unwrap_or("no summary")
        .to_string();
    println!("csi-sanity: {summary}");
    assert!(
        out.status.success() && summary.contains("| 0 Failed"),
        "csi-sanity failed: {summary}\n{text}"
    );
    let passed: u32 = summary
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 56, "{summary}");
    // Nothing leaks: no volume in the simulator, no loop device left.
    let state = sim.state().await;
    assert_eq!(
        state["volumes"].as_array().map(Vec::len),
        Some(0),
        "leaked volumes: {state}"
    );
    assert_eq!(
        std::fs::read_dir(files.hostdev.join("disk/by-id"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "leaked loop devices"
    );
}

fn sc(name: &str, params: Value) -> StorageClass {
    serde_json::from_value(json!({
        "metadata": {"name": name}, "provisioner": DRIVER, "parameters": params,
        "allowVolumeExpansion": true, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"
    }))
    .unwrap()
}

fn pvc(name: &str, sc: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sc, "resources": {"requests": {"storage": size}}}
    }))
    .unwrap()
}

async fn bound(pvcs: &Api<PersistentVolumeClaim>, name: &str) -> PersistentVolumeClaim {
    wait_for(&format!("PVC {name} to be Bound"), T, || async {
        pvcs.get(name)
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await
}

async fn volumes(c: &CsiCluster) -> Vec<Value> {
    c.sim.state().await["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// XFS: online ext4 growth needs CAP_SYS_RESOURCE, which the build machines drop (CapEff bit 24
/// is clear), so the filesystem-growth step uses XFS, which grows online without it.
fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "xfs".into(),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn pvc_binds_attaches_mounts_grows_and_is_deleted() {
    let _serial = SERIAL.lock().await;
    if !require_root("the PVC lifecycle") {
        return;
    }
    let c = CsiCluster::start().await;
    let scs: Api<StorageClass> = Api::all(c.kube.clone());
    let sc_name = unique("thin");
    scs.create(
        &PostParams::default(),
        &sc(
            &sc_name,
            json!({"flavour": "thin", "fsFormatOptions": "-L elemento"}),
        ),
    )
    .await
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.kube.clone(), &c.ns.name);
    pvcs.create(&PostParams::default(), &pvc("data", &sc_name, "1Gi"))
        .await
        .unwrap();
    let claim = bound(&pvcs, "data").await;
    let pv_name = claim.spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(c.kube.clone())
        .get(&pv_name)
        .await
        .unwrap();
    let csi = pv.spec.as_ref().unwrap().csi.clone().unwrap();
    let vid = csi.volume_handle.clone();
    let vols = volumes(&c).await;
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0]["id"], vid.as_str());
    assert_eq!(vols[0]["format"], "qcow2", "the thin flavour");
    assert_eq!(
        vols[0]["size_bytes"], 1_125_000_000u64,
        "1 GiB rounded up to the 0.125 GB grid"
    );
    assert_eq!(vols[0]["name"], pv_name.as_str());
    // Placement follows topology: made on the Node's zone (its provider), and the PV says so.
    assert_eq!(
        vols[0]["provider"], "atomos",
        "created on the zone's provider"
    );
    let affinity = serde_json::to_value(&pv.spec.as_ref().unwrap().node_affinity).unwrap();
    let terms = affinity["required"]["nodeSelectorTerms"].to_string();
    assert!(
        terms.contains("topology.kubernetes.io/zone") && terms.contains("atomos"),
        "{terms}"
    );

    // Attach through a VolumeAttachment (no kubelet: the harness registered the CSINode).
    let node_name = c.node_name.clone();
    let vas: Api<VolumeAttachment> = Api::all(c.kube.clone());
    let va_name = unique("va");
    let va: VolumeAttachment = serde_json::from_value(json!({"metadata": {"name": va_name}, "spec": {"attacher": DRIVER, "nodeName": node_name, "source": {"persistentVolumeName": pv_name}}})).unwrap();
    vas.create(&PostParams::default(), &va).await.unwrap();
    let attached = wait_for("the VolumeAttachment to be attached", T, || async {
        vas.get(&va_name)
            .await
            .ok()
            .filter(|v| v.status.as_ref().is_some_and(|s| s.attached))
    })
    .await;
    let publish_context: HashMap<String, String> = attached
        .status
        .unwrap()
        .attachment_metadata
        .unwrap_or_default()
        .into_iter()
        .collect();
    let state = c.sim.state().await;
    let vm = state["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == c.vm.as_str())
        .unwrap();
    assert_eq!(vm["volumes"], json!([vid]), "attached in the simulator");

    // Stage, publish, write; unpublish, unstage; stage and publish again; read it back.
    let mut node = node_client(&c.node_socket).await;
    let work = c.files.dir.path();
    let staging = work.join("staging").display().to_string();
    let target = work.join("target").display().to_string();
    let ctx: HashMap<String, String> = csi
        .volume_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let stage = NodeStageVolumeRequest {
        volume_id: vid.clone(),
        publish_context: publish_context.clone(),
        staging_target_path: staging.clone(),
        volume_capability: Some(mount_cap()),
        volume_context: ctx.clone(),
        ..Default::default()
    };
    let publish = NodePublishVolumeRequest {
        volume_id: vid.clone(),
        publish_context: publish_context.clone(),
        staging_target_path: staging.clone(),
        target_path: target.clone(),
        volume_capability: Some(mount_cap()),
        volume_context: ctx.clone(),
        ..Default::default()
    };
    let unpublish = NodeUnpublishVolumeRequest {
        volume_id: vid.clone(),
        target_path: target.clone(),
    };
    let unstage = NodeUnstageVolumeRequest {
        volume_id: vid.clone(),
        staging_target_path: staging.clone(),
    };
    node.node_stage_volume(stage.clone()).await.unwrap();
    node.node_stage_volume(stage.clone())
        .await
        .expect("stage is idempotent");
    // The StorageClass's fsFormatOptions reached mkfs (through the PV's volume attributes).
    let label = std::process::Command::new("sh")
        .args([
            "-c",
            "blkid -o value -s LABEL \"$(findmnt -n -o SOURCE --mountpoint \"$1\")\"",
            "sh",
            &staging,
        ])
        .output()
        .expect("blkid");
    assert_eq!(
        String::from_utf8_lossy(&label.stdout).trim(),
        "elemento",
        "{}",
        String::from_utf8_lossy(&label.stderr)
    );
    node.node_publish_volume(publish.clone()).await.unwrap();
    std::fs::write(format!("{target}/hello.txt"), "written before unstage").unwrap();
    node.node_unpublish_volume(unpublish.clone()).await.unwrap();
    node.node_unstage_volume(unstage.clone()).await.unwrap();
    assert!(
        !std::path::Path::new(&target).exists(),
        "unpublish removes the target"
    );
    node.node_stage_volume(stage.clone()).await.unwrap();
    node.node_publish_volume(publish.clone()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{target}/hello.txt")).unwrap(),
        "written before unstage",
        "not reformatted"
    );

    // Grow: the resizer expands the Elemento volume, the node plugin the filesystem.
    pvcs.patch(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
    )
    .await
    .unwrap();
    wait_for("the volume to grow in the simulator", T, || async {
        volumes(&c)
            .await
            .first()
            .filter(|v| v["size_bytes"].as_u64() >= Some(2u64 << 30))
            .cloned()
    })
    .await;
    let expanded = node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: vid.clone(),
            volume_path: target.clone(),
            volume_capability: Some(mount_cap()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expanded.capacity_bytes >= 2 << 30, "{expanded:?}");
    let st = rustix::fs::statvfs(target.as_str()).unwrap();
    assert!(
        st.f_blocks * st.f_frsize > (19 << 30) / 10,
        "the filesystem grew: {} bytes",
        st.f_blocks * st.f_frsize
    );
    let stats = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: vid.clone(),
            volume_path: target.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stats.volume_condition.unwrap().abnormal);

    // Tear down: unmount, detach, delete.
    node.node_unpublish_volume(unpublish).await.unwrap();
    node.node_unstage_volume(unstage).await.unwrap();
    vas.delete(&va_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the volume to be detached", T, || async {
        let s = c.sim.state().await;
        let vm = s["vms"]
            .as_array()?
            .iter()
            .find(|v| v["id"] == c.vm.as_str())?
            .clone();
        (vm["volumes"] == json!([])).then_some(())
    })
    .await;
    pvcs.delete("data", &DeleteParams::default()).await.unwrap();
    wait_for("the Elemento volume to be destroyed", T, || async {
        volumes(&c).await.is_empty().then_some(())
    })
    .await;
    let _ = scs.delete(&sc_name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn an_invalid_parameter_leaves_the_pvc_pending_with_an_event_and_creates_nothing() {
    let _serial = SERIAL.lock().await;
    if !require_root("the invalid-parameter test") {
        return;
    }
    let c = CsiCluster::start().await;
    let scs: Api<StorageClass> = Api::all(c.kube.clone());
    let sc_name = unique("gold");
    scs.create(
        &PostParams::default(),
        &sc(&sc_name, json!({"flavour": "gold"})),
    )
    .await
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.kube.clone(), &c.ns.name);
    pvcs.create(&PostParams::default(), &pvc("bad", &sc_name, "1Gi"))
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(c.kube.clone(), &c.ns.name);
    let ev = wait_for("a ProvisioningFailed event", T, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("bad")
                    && e.reason.as_deref() == Some("ProvisioningFailed")
            })
    })
    .await;
    let msg = ev.message.unwrap_or_default();
    assert!(
        msg.contains("flavour")
            && msg.contains("\"gold\"")
            && msg.contains("shared, standard, thin"),
        "{msg}"
    );
    assert!(msg.contains("InvalidArgument"), "{msg}");
    let p = pvcs.get("bad").await.unwrap();
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert!(volumes(&c).await.is_empty());
    assert_eq!(
        c.sim.counters().await["volume.create"]["total"]
            .as_u64()
            .unwrap_or(0),
        0,
        "no create call at all"
    );
    let _ = pvcs.delete("bad", &DeleteParams::default()).await;
    let _ = scs.delete(&sc_name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn twenty_pvcs_at_once_make_exactly_twenty_volumes() {
    let _serial = SERIAL.lock().await;
    if !require_root("the 20-PVC test") {
        return;
    }
    let c = CsiCluster::start().await;
    let scs: Api<StorageClass> = Api::all(c.kube.clone());
    let sc_name = unique("std");
    scs.create(&PostParams::default(), &sc(&sc_name, json!({})))
        .await
        .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.kube.clone(), &c.ns.name);
    let names: Vec<String> = (0..20).map(|i| format!("pvc-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| {
        let pvcs = pvcs.clone();
        let claim = pvc(n, &sc_name, "1Gi");
        async move { pvcs.create(&PostParams::default(), &claim).await.unwrap() }
    }))
    .await;
    for n in &names {
        bound(&pvcs, n).await;
    }
    let vols = volumes(&c).await;
    assert_eq!(vols.len(), 20, "exactly 20 volumes");
    let mut vnames: Vec<&str> = vols.iter().filter_map(|v| v["name"].as_str()).collect();
    vnames.sort();
    vnames.dedup();
    assert_eq!(vnames.len(), 20, "no duplicates");
    let creates = c.sim.counters().await["volume.create"]["total"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(creates, 20);
    for n in &names {
        pvcs.delete(n, &DeleteParams::default()).await.unwrap();
    }
    wait_for("all volumes destroyed", T, || async {
        volumes(&c).await.is_empty().then_some(())
    })
    .await;
    // The provisioner deletes each PV object after its volume: none may outlive the test.
    let pvs: Api<PersistentVolume> = Api::all(c.kube.clone());
    wait_for("every PV object deleted", T, || async {
        let left = pvs.list(&Default::default()).await.ok()?.items;
        left.iter()
            .all(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.as_deref())
                    != Some(sc_name.as_str())
            })
            .then_some(())
    })
    .await;
    let _ = scs.delete(&sc_name, &DeleteParams::default()).await;
}
