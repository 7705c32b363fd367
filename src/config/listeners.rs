//! Where the gateway listens: every listener with its key, and the check
//! that no two services share an address.

use super::*;

impl Config {
    /// Every listener of every service with its key, in a stable order.
    pub fn all_listeners(&self) -> Vec<(String, SocketAddr)> {
        let sections = [
            ("smtp", self.smtp.listeners()),
            ("pop3", self.pop3.clone()),
            ("smtp_proxy", self.smtp_proxy.listeners()),
            ("pop3_proxy", self.pop3_proxy.listeners()),
        ];
        let mut out = Vec::new();
        for (name, l) in sections {
            for (i, a) in l.listen.iter().enumerate() {
                out.push((format!("{name}.listen[{i}]"), *a));
            }
            for (i, a) in l.listen_tls.iter().enumerate() {
                out.push((format!("{name}.listen_tls[{i}]"), *a));
            }
        }
        for (i, a) in self.console.listen.iter().enumerate() {
            out.push((format!("console.listen[{i}]"), *a));
        }
        for (section, list) in [
            ("mta_sts", &self.mta_sts.listen),
            ("metrics", &self.metrics.listen),
        ] {
            for (i, a) in list.iter().enumerate() {
                out.push((format!("{section}.listen[{i}]"), *a));
            }
        }
        for (i, a) in self
            .acme
            .iter()
            .flat_map(|a| a.http_listen.iter())
            .enumerate()
        {
            out.push((format!("acme.http_listen[{i}]"), *a));
        }
        out
    }

    pub(super) fn check_listeners_unique(&self, file: &Path) -> Result<(), ConfigError> {
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        // Port 0 (any free port, for tests) never collides.
        for (key, addr) in self
            .all_listeners()
            .into_iter()
            .filter(|(_, a)| a.port() != 0)
        {
            if let Some(first) = seen.get(&addr) {
                return Err(ConfigError {
                    file: file.to_path_buf(),
                    key,
                    message: format!("{addr} is already used by {first}"),
                });
            }
            seen.insert(addr, key);
        }
        Ok(())
    }
}
