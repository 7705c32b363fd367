use super::*;

#[test]
fn the_configuration_file_is_the_flag_then_the_variable_then_installed_then_local() {
    let both = |_: &Path| true;
    let installed_only = |p: &Path| p == Path::new(INSTALLED_FILE);
    let neither = |_: &Path| false;
    assert_eq!(
        locate(Some("a.json"), Some("b.json"), both),
        Path::new("a.json")
    );
    assert_eq!(locate(None, Some("b.json"), both), Path::new("b.json"));
    // An installed system's file wins over a stray ./gateway.json.
    assert_eq!(locate(None, Some(""), both), Path::new(INSTALLED_FILE));
    assert_eq!(locate(None, None, both), Path::new(INSTALLED_FILE));
    let local_only = |p: &Path| p == Path::new(DEFAULT_FILE);
    assert_eq!(locate(None, None, local_only), Path::new(DEFAULT_FILE));
    assert_eq!(
        locate(None, None, installed_only),
        Path::new(INSTALLED_FILE)
    );
    assert_eq!(locate(None, None, neither), Path::new(DEFAULT_FILE));
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("gateway.json"), Path::new("/etc/sealpost"))
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn the_shipped_file_parses_to_the_documented_defaults() {
    let shipped = include_str!("../../gateway.json");
    let config = parse(shipped).unwrap();
    let empty = parse("{}").unwrap();
    assert_eq!(config.to_pretty_json(), empty.to_pretty_json());
    assert_eq!(config.smtp.listen, vec!["127.0.0.1:10025".parse().unwrap()]);
    assert_eq!(config.limits.max_concurrent_kdf, 2);
    assert_eq!(config.kdf.memlimit_bytes, 64 << 20);
    assert!(config.smtp.require_tls);
}

#[test]
fn a_relative_data_dir_is_relative_to_the_config_file() {
    let config = parse(r#"{"data_dir": "var/data"}"#).unwrap();
    assert_eq!(config.data_dir, Path::new("/etc/sealpost/var/data"));
    let config = parse(r#"{"data_dir": "/srv/sealpost"}"#).unwrap();
    assert_eq!(config.data_dir, Path::new("/srv/sealpost"));
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    assert!(
        error_of(r#"{"smtp": {"max_recipient": 5}}"#).contains("smtp.max_recipient: unknown key")
    );
    assert!(error_of(r#"{"colour": "blue"}"#).contains("colour: unknown key"));
}

#[test]
fn wrong_types_name_the_key_and_the_expectation() {
    let e = error_of(r#"{"smtp": {"max_recipients": "ten"}}"#);
    assert!(
        e.contains("smtp.max_recipients: expected a whole number from 1 to 100000"),
        "{e}"
    );
    let e = error_of(r#"{"smtp": {"require_tls": "yes"}}"#);
    assert!(
        e.contains("smtp.require_tls: expected true or false"),
        "{e}"
    );
    let e = error_of(r#"{"pop3": []}"#);
    assert!(e.contains("pop3: expected an object"), "{e}");
    let e = error_of(r#"{"tls": {"cert_file": 5}}"#);
    assert!(
        e.contains("tls.cert_file: expected a file name or null"),
        "{e}"
    );
}

#[test]
fn impossible_values_are_refused() {
    assert!(error_of(r#"{"limits": {"max_connections": 0}}"#).contains("limits.max_connections"));
    assert!(error_of(r#"{"kdf": {"memlimit_bytes": 1024}}"#).contains("kdf.memlimit_bytes"));
    assert!(error_of(r#"{"kdf": {"opslimit": -1}}"#).contains("kdf.opslimit"));
    assert!(
        error_of(r#"{"hostname": "bad host"}"#)
            .contains("hostname: \"bad host\" is not a valid DNS name")
    );
    assert!(error_of(r#"{"data_dir": ""}"#).contains("data_dir: must not be empty"));
}

#[test]
fn unparsable_addresses_name_the_list_entry() {
    let e = error_of(r#"{"smtp": {"listen": ["127.0.0.1:10025", "localhost:25"]}}"#);
    assert!(
        e.contains("smtp.listen[1]: \"localhost:25\" is not an address:port"),
        "{e}"
    );
    let e = error_of(r#"{"node": "node one"}"#);
    assert!(e.contains("node") && e.contains("not a node name"), "{e}");
    let e = error_of(r#"{"haproxy_trusted_networks": ["balancer"]}"#);
    assert!(e.contains("haproxy_trusted_networks[0]"), "{e}");
    let e = error_of(r#"{"smtp": {"allowed_clients": ["10.0.0.0/40"]}}"#);
    assert!(e.contains("smtp.allowed_clients[0]"), "{e}");
}

#[test]
fn an_empty_listen_list_turns_the_listener_off() {
    let config = parse(r#"{"pop3": {"listen": []}}"#).unwrap();
    assert!(config.pop3.listen.is_empty());
    assert_eq!(config.pop3.listen_tls.len(), 1);
}

#[test]
fn the_console_listens_on_loopback_unless_told_otherwise() {
    let config = parse("{}").unwrap();
    assert_eq!(config.console.listen, addr_list(&["127.0.0.1:8450"]));
    assert_eq!(config.console.session_idle_secs, 900);
    assert!(
        parse(r#"{"console": {"listen": []}}"#)
            .unwrap()
            .console
            .listen
            .is_empty()
    );
    let e = error_of(r#"{"console": {"listen": ["127.0.0.1:10025"]}}"#);
    assert!(
        e.contains("console.listen[0]: 127.0.0.1:10025 is already used by smtp.listen[0]"),
        "{e}"
    );
    let e = error_of(r#"{"console": {"session_idle_secs": 0}}"#);
    assert!(e.contains("console.session_idle_secs"), "{e}");
}

#[test]
fn two_services_cannot_share_an_address() {
    let e = error_of(r#"{"pop3": {"listen": ["127.0.0.1:10025"]}}"#);
    assert!(
        e.contains("pop3.listen[0]: 127.0.0.1:10025 is already used by smtp.listen[0]"),
        "{e}"
    );
}

#[test]
fn allowed_targets_are_patterns_and_bad_ones_name_their_entry() {
    let config =
        parse(r#"{"proxy": {"allowed_targets": ["*.example.com", "smtp.office365.com:587"]}}"#)
            .unwrap();
    assert!(config.proxy.allowed_targets[0].matches("mail.example.com", 25));
    assert!(
        config
            .to_pretty_json()
            .contains("\"smtp.office365.com:587\"")
    );
    let e = error_of(r#"{"proxy": {"allowed_targets": ["ok.example.com", "bad host"]}}"#);
    assert!(e.contains("proxy.allowed_targets[1]"), "{e}");
}

#[test]
fn implicit_tls_ports_are_ports_and_bad_ones_name_their_entry() {
    let config = parse(r#"{"proxy": {"implicit_tls_ports": [465, 2465]}}"#).unwrap();
    assert_eq!(config.proxy.implicit_tls_ports, [465, 2465]);
    assert_eq!(parse("{}").unwrap().proxy.implicit_tls_ports, [465, 995]);
    for bad in ["[0]", "[70000]", "[\"465\"]", "465"] {
        let e = error_of(&format!(r#"{{"proxy": {{"implicit_tls_ports": {bad}}}}}"#));
        assert!(e.contains("proxy.implicit_tls_ports"), "{bad}: {e}");
    }
}

#[test]
fn certificate_and_key_come_together() {
    let e = error_of(r#"{"tls": {"cert_file": "cert.pem"}}"#);
    assert!(
        e.contains("tls.cert_file: cert_file and key_file must be given together"),
        "{e}"
    );
    let config = parse(r#"{"tls": {"cert_file": "c.pem", "key_file": "k.pem"}}"#).unwrap();
    assert_eq!(
        config.tls.cert_file.unwrap(),
        Path::new("/etc/sealpost/c.pem")
    );
}

#[test]
fn the_hardening_keys_have_their_defaults_and_name_bad_entries() {
    let config = parse("{}").unwrap();
    assert_eq!(config.limits.hard_error_limit, 20);
    assert_eq!(config.limits.min_data_bytes_per_sec, 500);
    assert_eq!(config.pop3_proxy.max_message_bytes, 104_857_600);
    assert_eq!(
        config.control_socket.unwrap(),
        Path::new("/etc/sealpost/data/control.sock")
    );
    assert!(
        parse(r#"{"control_socket": null}"#)
            .unwrap()
            .control_socket
            .is_none()
    );
    let e = error_of(r#"{"limits": {"lockout_exempt_clients": ["192.0.2.9", "archiver"]}}"#);
    assert!(e.contains("limits.lockout_exempt_clients[1]"), "{e}");
    let e = error_of(r#"{"limits": {"overload_percent": 0}}"#);
    assert!(
        e.contains("limits.overload_percent: expected a whole number from 1 to 100"),
        "{e}"
    );
    let e = error_of(r#"{"pop3_proxy": {"max_message_bytes": 10}}"#);
    assert!(e.contains("pop3_proxy.max_message_bytes"), "{e}");
}

#[test]
fn invalid_json_is_reported_with_its_position() {
    let e = error_of("{\"hostname\": }");
    assert!(e.starts_with("gateway.json: not valid JSON"), "{e}");
    assert!(e.contains("line 1"), "{e}");
    assert!(error_of("[1]").contains("top level must be a JSON object"));
}

#[test]
fn alerts_are_refused_with_reasons_an_administrator_can_act_on() {
    let e = error_of(r#"{"alerts": {"smarthost": {"host": "smtp.example.org"}}}"#);
    assert!(e.contains("alerts.to: name at least one address"), "{e}");
    let relay = r#""smarthost": {"host": "smtp.example.org"}"#;
    let e = error_of(&format!(
        r#"{{"alerts": {{"to": ["it at example.org"], {relay}}}}}"#
    ));
    assert!(e.contains("is not an email address"), "{e}");
    let e = error_of(r#"{"alerts": {"to": ["it@example.org"]}}"#);
    assert!(e.contains("alerts.smarthost.host: name the relay"), "{e}");
    let e = error_of(
        r#"{"alerts": {"to": ["it@example.org"], "smarthost": {"host": "smtp.example.org", "tls": "none"}}}"#,
    );
    assert!(e.contains("none is only for a local MTA"), "{e}");
    let e = error_of(
        r#"{"alerts": {"to": ["it@example.org"], "smarthost": {"host": "127.0.0.1", "tls": "none", "username": "u", "password_file": "p"}}}"#,
    );
    assert!(e.contains("a password is never sent without TLS"), "{e}");
    let e = error_of(
        r#"{"alerts": {"to": ["it@example.org"], "smarthost": {"host": "smtp.example.org", "username": "u"}}}"#,
    );
    assert!(e.contains("a username needs its password_file"), "{e}");
    let e = error_of(
        r#"{"alerts": {"to": ["it@example.org"], "smarthost": {"host": "smtp.example.org", "port": 0}}}"#,
    );
    assert!(e.contains("alerts.smarthost.port"), "{e}");
    let ok = parse(
        r#"{"alerts": {"to": ["it@example.org"], "smarthost": {"host": "127.0.0.1", "port": 25, "tls": "none"}}}"#,
    )
    .unwrap();
    let alerts = ok.alerts.unwrap();
    assert_eq!(alerts.sender("gw.example.org"), "sealpost@gw.example.org");
    assert_eq!(
        (alerts.reminder_secs, alerts.archiver_stopped_hours),
        (86_400, 24)
    );
}

#[test]
fn acme_is_refused_with_reasons_an_administrator_can_act_on() {
    let http = r#""http_listen": ["0.0.0.0:80"]"#;
    let e = error_of(&format!(r#"{{"acme": {{{http}}}}}"#));
    assert!(e.contains("acme.agree_to_terms: must be true"), "{e}");
    let e = error_of(&format!(
        r#"{{"tls": {{"cert_file": "c.pem", "key_file": "k.pem"}}, "acme": {{"agree_to_terms": true, {http}}}}}"#
    ));
    assert!(
        e.contains("acme and tls.cert_file exclude each other"),
        "{e}"
    );
    let e = error_of(r#"{"acme": {"agree_to_terms": true}}"#);
    assert!(e.contains("acme.http_listen: ACME needs"), "{e}");
    let e = error_of(&format!(
        r#"{{"acme": {{"agree_to_terms": true, "directory": "http://ca.example/dir", {http}}}}}"#
    ));
    assert!(e.contains("must be https://"), "{e}");
    let e = error_of(r#"{"acme": {"agree_to_terms": true, "challenge": "tls-alpn-01"}}"#);
    assert!(e.contains("tls-alpn-01 needs mta_sts.listen"), "{e}");
    let e = error_of(r#"{"mta_sts": {"mode": "strict"}}"#);
    assert!(e.contains("mta_sts.mode"), "{e}");
    let ok = parse(&format!(
        r#"{{"acme": {{"agree_to_terms": true, "ca_file": "ca.pem", {http}}}, "mta_sts": {{"listen": ["0.0.0.0:443"]}}}}"#
    ))
    .unwrap();
    let acme = ok.acme.unwrap();
    assert_eq!(acme.directory, LETS_ENCRYPT);
    assert_eq!(acme.ca_file, Some(PathBuf::from("/etc/sealpost/ca.pem")));
    let e = error_of(r#"{"acme": {"agree_to_terms": true, "http_listen": ["127.0.0.1:8450"]}}"#);
    assert!(e.contains("already used by console.listen[0]"), "{e}");
}

#[test]
fn custody_settings_are_checked_with_reasons() {
    let c = parse(r#"{}"#).unwrap();
    assert!(c.custody.log && c.custody.tsa.is_none());
    assert_eq!(c.custody.segment_bytes, 16 * 1024 * 1024);
    let e = error_of(r#"{"custody": {"tsa": {"url": "ftp://tsa.example/"}}}"#);
    assert!(e.contains("custody.tsa.url"), "{e}");
    let e = error_of(r#"{"custody": {"tsa": {"url": "http://tsa.example/"}}}"#);
    assert!(e.contains("custody.tsa.ca_file") && e.contains("CA"), "{e}");
    let e = error_of(
        r#"{"custody": {"log": false, "tsa": {"url": "http://tsa.example/", "ca_file": "ca.pem"}}}"#,
    );
    assert!(e.contains("anchors need the log"), "{e}");
    let e = error_of(r#"{"custody": {"segment_bytes": 100}}"#);
    assert!(e.contains("custody.segment_bytes"), "{e}");
    let e = error_of(r#"{"custody": {"anchor_interval_secs": 5}}"#);
    assert!(e.contains("custody.anchor_interval_secs"), "{e}");
    let ok = parse(
        r#"{"custody": {"tsa": {"url": "http://tsa.example/", "ca_file": "ca.pem"}, "anchor_copy_dir": "copy"}}"#,
    )
    .unwrap();
    assert!(ok.custody.anchor_copy_dir.unwrap().is_absolute());
}
