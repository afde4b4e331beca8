use k8s_openapi::api::core::v1::Pod;

use super::*;

const TARGET: Target<'static> = Target {
    namespace: "shop",
    control_plane_namespace: "weft",
};

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).expect("a pod")
}

fn run(pod: &mut Pod, target: &Target<'_>) -> Result<Outcome, InjectError> {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    inject(&mut pod.metadata, spec, target, &Settings::default())
}

const APP: &str = "
metadata: {name: web, labels: {app: web}}
spec:
  initContainers: [{name: migrate, image: migrate}]
  containers: [{name: app, image: web, ports: [{containerPort: 8080}]}]
";

fn names(containers: &Option<Vec<Container>>) -> Vec<String> {
    containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn a_pod_gets_the_init_step_and_the_native_sidecar_ahead_of_its_own() {
    let mut web = pod(APP);
    assert_eq!(run(&mut web, &TARGET), Ok(Outcome::Injected));
    let spec = web.spec.as_ref().expect("present in the fixture");
    assert_eq!(
        names(&spec.init_containers),
        ["weft-init", "weft-proxy", "migrate"]
    );
    assert_eq!(names(&Some(spec.containers.clone())), ["app"]);

    let inits = spec
        .init_containers
        .as_ref()
        .expect("present in the fixture");
    let init = &inits[0];
    assert_eq!(init.restart_policy, None, "the init step runs once");
    let caps = init
        .security_context
        .as_ref()
        .expect("present in the fixture")
        .capabilities
        .as_ref();
    assert_eq!(
        caps.expect("present in the fixture").add.as_deref(),
        Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..])
    );
    assert_eq!(
        init.args.as_deref().expect("present in the fixture"),
        ["init", "--proxy-uid", "1337", "--proxy-gid", "1337"]
    );

    let proxy = &inits[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    let startup = proxy
        .startup_probe
        .as_ref()
        .expect("present in the fixture");
    let get = startup.http_get.as_ref().expect("present in the fixture");
    assert_eq!(get.path.as_deref(), Some("/ready"));
    assert_eq!(get.port, IntOrString::Int(15020));
    let security = proxy
        .security_context
        .as_ref()
        .expect("present in the fixture");
    assert_eq!(security.run_as_user, Some(1337));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security
            .capabilities
            .as_ref()
            .expect("present in the fixture")
            .drop
            .as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    let env: BTreeMap<&str, &EnvVar> = proxy
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let field = |name: &str| {
        env[name]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(
        field("WEFT_WORKLOAD_ADDRESS").as_deref(),
        Some("status.podIP")
    );
    assert_eq!(
        field("WEFT_SERVICE_ACCOUNT").as_deref(),
        Some("spec.serviceAccountName")
    );
    assert!(
        !env.contains_key("WEFT_SERVICE"),
        "membership comes from EndpointSlices"
    );
    let requests = proxy
        .resources
        .as_ref()
        .expect("present in the fixture")
        .requests
        .as_ref()
        .expect("present in the fixture");
    assert_eq!(requests["memory"], Quantity("32Mi".to_owned()));

    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["weft-token", "weft-state"]);
    let token = spec.volumes.as_ref().expect("present in the fixture")[0]
        .projected
        .as_ref()
        .expect("present in the fixture");
    let projection = token.sources.as_ref().expect("present in the fixture")[0]
        .service_account_token
        .as_ref()
        .expect("present in the fixture");
    assert_eq!(projection.audience.as_deref(), Some("weft"));
    assert_eq!(
        web.metadata
            .annotations
            .as_ref()
            .expect("present in the fixture")[VERSION_ANNOTATION],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn injecting_twice_changes_nothing() {
    let mut once = pod(APP);
    run(&mut once, &TARGET).expect("present in the fixture");
    let mut twice = once.clone();
    assert_eq!(
        run(&mut twice, &TARGET),
        Ok(Outcome::Skipped(Skip::AlreadyInjected))
    );
    assert_eq!(once, twice);
}

#[test]
fn a_reinvocation_puts_the_proxy_back_in_front() {
    let mut web = pod(APP);
    run(&mut web, &TARGET).expect("present in the fixture");
    // Another webhook, called after Weft's, put its own init container first.
    let spec = web.spec.as_mut().expect("present in the fixture");
    let inits = spec
        .init_containers
        .as_mut()
        .expect("present in the fixture");
    inits.insert(
        0,
        Container {
            name: "vault".to_owned(),
            ..Container::default()
        },
    );
    assert_eq!(run(&mut web, &TARGET), Ok(Outcome::Reordered));
    assert_eq!(
        names(
            &web.spec
                .as_ref()
                .expect("present in the fixture")
                .init_containers
        ),
        ["weft-init", "weft-proxy", "vault", "migrate"]
    );
    assert_eq!(
        run(&mut web, &TARGET),
        Ok(Outcome::Skipped(Skip::AlreadyInjected))
    );
}

#[test]
fn system_namespaces_opted_out_and_host_network_pods_are_left_alone() {
    for (namespace, yaml, why) in [
        ("kube-system", APP, Skip::SystemNamespace),
        ("weft", APP, Skip::SystemNamespace),
        (
            "shop",
            "metadata: {labels: {weft.io/inject: disabled}}\nspec: {containers: [{name: a}]}",
            Skip::OptedOut,
        ),
        (
            "shop",
            "spec: {hostNetwork: true, containers: [{name: a}]}",
            Skip::HostNetwork,
        ),
        (
            "shop",
            "spec: {containers: [{name: a}, {name: weft-proxy}]}",
            Skip::AlreadyInjected,
        ),
    ] {
        let mut left = pod(yaml);
        let before = left.clone();
        let target = Target {
            namespace,
            ..TARGET
        };
        assert_eq!(run(&mut left, &target), Ok(Outcome::Skipped(why)), "{yaml}");
        assert_eq!(left, before, "{namespace}: {yaml}");
    }
}

#[test]
fn annotations_set_exclusions_resources_and_log_level() {
    let mut web = pod("
metadata:
  annotations:
    weft.io/exclude-inbound-ports: ' 9090, 8081 '
    weft.io/exclude-outbound-ports: '5432'
    weft.io/exclude-outbound-cidrs: 10.0.0.0/8,192.0.2.7
    weft.io/proxy-memory-limit: 1Gi
    weft.io/proxy-cpu-request: ''
    weft.io/proxy-log-level: debug
spec: {containers: [{name: app}]}
");
    run(&mut web, &TARGET).expect("present in the fixture");
    let inits = web
        .spec
        .as_ref()
        .expect("present in the fixture")
        .init_containers
        .clone()
        .expect("present in the fixture");
    assert_eq!(
        inits[0].args.as_deref().expect("present in the fixture")[5..],
        [
            "--exclude-inbound-ports",
            "9090,8081",
            "--exclude-outbound-ports",
            "5432",
            "--exclude-outbound-cidrs",
            "10.0.0.0/8,192.0.2.7",
        ]
    );
    let resources = inits[1].resources.as_ref().expect("present in the fixture");
    assert_eq!(
        resources.limits.as_ref().expect("present in the fixture")["memory"],
        Quantity("1Gi".to_owned())
    );
    assert!(
        !resources
            .requests
            .as_ref()
            .expect("present in the fixture")
            .contains_key("cpu"),
        "an empty annotation unsets the default"
    );
    let log = inits[1]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "WEFT_LOG")
        .expect("present in the fixture");
    assert_eq!(log.value.as_deref(), Some("debug"));
}

#[test]
fn bad_annotations_are_refused_with_the_annotation_named() {
    for (annotation, value) in [
        (EXCLUDE_INBOUND_PORTS, "80,http"),
        (EXCLUDE_OUTBOUND_PORTS, "70000"),
        (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/33"),
        (PROXY_MEMORY_LIMIT, "lots"),
    ] {
        let mut web = pod(APP);
        web.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(annotation.to_owned(), value.to_owned());
        let before = web.clone();
        let error = run(&mut web, &TARGET).expect_err("refused");
        assert!(error.0.contains(annotation), "{annotation}: {error}");
        assert_eq!(web, before, "nothing changes on a refusal");
    }
}

#[test]
fn a_pod_with_a_volume_of_weft_s_name_is_refused() {
    let mut web =
        pod("spec: {containers: [{name: a}], volumes: [{name: weft-state, emptyDir: {}}]}");
    let error = run(&mut web, &TARGET).expect_err("refused");
    assert!(error.0.contains("weft-state"), "{error}");
}
