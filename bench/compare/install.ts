/**
 * Installs the Debian packages the compared tools come from, when they are missing.
 */
import { execFileSync } from "node:child_process";

/**
 * ansible-core carries `ansible.builtin.iptables`; the `ansible` package (7.7) adds only
 * community collections, which the benchmark does not use.
 */
export const PACKAGES = ["ansible-core", "puppet", "puppet-module-puppetlabs-firewall"];

/** Runs apt-get install for whichever of PACKAGES is not installed yet. */
export function installPackages(log: (line: string) => void): void {
  const missing = PACKAGES.filter((name) => !isInstalled(name));
  if (missing.length === 0) return;
  log(`installing ${missing.join(", ")} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update", "-qq"], { env, stdio: "inherit" });
  execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], {
    env,
    stdio: ["ignore", "ignore", "inherit"],
  });
}

function isInstalled(name: string): boolean {
  try {
    const status = execFileSync("dpkg-query", ["-W", "-f=${Status}", name], {
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
    return status === "install ok installed";
  } catch {
    return false;
  }
}
