//! nginx as the plain load balancer of the multi-replica tests: round
//! robin over the replicas, no affinity, so that consecutive requests of
//! one client land on different replicas.

use std::path::Path;
use std::process::Command;

/// The configuration of an nginx that listens on `port` and spreads
/// requests round robin over `upstreams` (ports on 127.0.0.1), keeping all
/// its files (pid, logs, temporary paths) under `dir`. `nginx` is the
/// binary: its temporary paths are given only for the modules it was built
/// with (Debian's nginx-light lacks some). The access log (`access.log`)
/// names the upstream of every request.
pub fn round_robin_conf(nginx: &str, dir: &Path, port: u16, upstreams: &[u16]) -> String {
    let d = dir.display();
    let features = Command::new(nginx)
        .arg("-V")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stderr).into_owned())
        .unwrap_or_default();
    let mut temp_paths =
        format!("client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n");
    for module in ["fastcgi", "uwsgi", "scgi"] {
        if !features.contains(&format!("--without-http_{module}_module")) {
            temp_paths.push_str(&format!("    {module}_temp_path {d}/{module};\n"));
        }
    }
    let servers: String = upstreams
        .iter()
        .map(|port| format!("        server 127.0.0.1:{port};\n"))
        .collect();
    format!(
        r#"daemon off;
# One process: the guard's kill (SIGKILL, all std offers) must leave no
# orphaned worker behind, which a master process would.
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    log_format upstream '$request_method $uri $status upstream=$upstream_addr last_event_id=$http_last_event_id';
    access_log {d}/access.log upstream;
    {temp_paths}
    upstream replicas {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"#
    )
}

/// The command that runs nginx on the configuration file `conf`, with its
/// prefix and error log in `dir`.
pub fn command(nginx: &str, dir: &Path, conf: &Path) -> Command {
    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"));
    command
}
