//! The demo route table, built as the gateway builds it at startup.

use portico::config::Config;
use portico::descriptors;
use portico::routes::RouteTable;

pub fn demo_routes() -> RouteTable {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[descriptors]
sets = ["{dir}/descriptors/demo.binpb"]
[upstreams.demo]
endpoints = ["127.0.0.1:1"]
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
[[routes]]
grpc_service = "portico.demo.v1.Feed"
upstream = "demo"
"#,
        dir = env!("CARGO_MANIFEST_DIR")
    );
    let config = Config::from_toml(&text).unwrap();
    let mut pool = descriptors::builtin::pool();
    for set in &config.descriptors.sets {
        descriptors::add_set_file(&mut pool, set).unwrap();
    }
    RouteTable::build(&config, &pool).unwrap()
}
