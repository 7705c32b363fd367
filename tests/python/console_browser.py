"""The web console in a real browser (Chromium driven by Selenium), the way
an office administrator uses it: log in, create a mailbox and read its
password from the page, watch the pending count change when mail arrives
over SMTP, and collect that mail over POP3 with the password the page showed.

Usage: console_browser.py CONSOLE_URL ADMIN_PASSWORD_FILE CERT SMTP_PORT POP3S_PORT SPKI SCREENSHOT_DIR

SPKI is the base64 SHA-256 of the gateway certificate's public key: Chromium
accepts that one self-signed key and nothing else. Prints one JSON line with
what it saw; exits non-zero on any failure.
"""

import json
import os
import poplib
import smtplib
import ssl
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

DEADLINE_SECS = 20


def wait_for(what, check):
    """Polls `check` until it returns something true, up to the deadline."""
    end = time.monotonic() + DEADLINE_SECS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pending_on_dashboard(driver, url, mailbox_id):
    driver.get(url + "/")
    for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr"):
        if mailbox_id in row.text:
            return int(row.find_element(By.CSS_SELECTOR, "td.pending").text)
    raise AssertionError(f"{mailbox_id} is not on the dashboard")


def main():
    url, password_file, cert, smtp_port, pop3s_port, spki, shots = sys.argv[1:8]
    with open(password_file, encoding="utf-8") as f:
        admin_password = f.readline().rstrip("\n")
    os.makedirs(shots, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="sealpost-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # No name is looked up but localhost (from /etc/hosts), and the
        # built-in DNS client and DNS-over-HTTPS stay off: Chromium asked
        # the system's name server and a public DoH address without these.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
        "--disable-features=AsyncDns,DnsOverHttps",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={spki}",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    seen = {}
    try:
        driver.set_page_load_timeout(DEADLINE_SECS)
        driver.get(url + "/")
        assert driver.current_url.endswith("/login"), driver.current_url
        driver.find_element(By.NAME, "password").send_keys(admin_password)
        driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        wait_for("the dashboard", lambda: driver.find_elements(By.XPATH, "//h1[text()='Dashboard']"))

        driver.find_element(By.LINK_TEXT, "New mailbox").click()
        driver.find_element(By.NAME, "name").send_keys("Journal (Microsoft 365)")
        driver.find_element(By.NAME, "description").send_keys("Journal reports from the tenant")
        driver.find_element(By.CSS_SELECTOR, "form[action='/mailboxes'] button").click()
        shown = wait_for("the generated password", lambda: driver.find_elements(By.ID, "password"))
        password = shown[0].text
        address = driver.find_element(By.ID, "address").text
        mailbox_id = address.split("@")[0]
        # The copy buttons appear only when the page's script ran, which the
        # Content-Security-Policy allows by its hash alone.
        copy = driver.find_element(By.CSS_SELECTOR, "button[data-copy='password']")
        seen["copy_button_shown"] = copy.is_displayed()
        driver.save_screenshot(os.path.join(shots, "console-mailbox-created.png"))

        seen["pending_before"] = pending_on_dashboard(driver, url, mailbox_id)

        context = ssl.create_default_context(cafile=cert)
        with smtplib.SMTP("localhost", int(smtp_port), timeout=DEADLINE_SECS) as smtp:
            smtp.ehlo("browser-test.example")
            smtp.starttls(context=context)
            smtp.ehlo("browser-test.example")
            smtp.sendmail(
                "journal@tenant.example",
                [address],
                "From: alice@tenant.example\r\nTo: bob@partner.example\r\n"
                "Subject: Seen in the browser\r\n\r\nQuarterly figures attached.\r\n",
            )
        seen["pending_after"] = wait_for(
            "the pending count to change",
            lambda: pending_on_dashboard(driver, url, mailbox_id) or None,
        )
        driver.save_screenshot(os.path.join(shots, "console-dashboard.png"))
        driver.find_element(By.LINK_TEXT, "Journal (Microsoft 365)").click()
        wait_for("the mailbox page", lambda: "/mailboxes/" in driver.current_url)
        driver.save_screenshot(os.path.join(shots, "console-mailbox.png"))

        pop3 = poplib.POP3_SSL("localhost", int(pop3s_port), context=context, timeout=DEADLINE_SECS)
        pop3.user(mailbox_id)
        pop3.pass_(password)
        count, _ = pop3.stat()
        _, lines, _ = pop3.retr(1)
        pop3.dele(1)
        pop3.quit()
        seen["retrieved"] = count
        seen["subject_seen"] = b"Subject: Seen in the browser" in lines
        seen["mailbox_id"] = mailbox_id
        seen["pending_at_end"] = pending_on_dashboard(driver, url, mailbox_id)
        # The certificate page: the failed ACME renewal, and "Renew now".
        def acme_failure():
            driver.get(url + "/certificate")
            return "The last renewal failed" in driver.page_source or None

        seen["acme_failure_shown"] = wait_for("the ACME failure on the certificate page", acme_failure)
        driver.save_screenshot(os.path.join(shots, "console-certificate.png"))
        driver.find_element(By.CSS_SELECTOR, "form[action='/certificate/renew'] button").click()
        seen["renew_asked"] = bool(
            wait_for(
                "the renewal notice",
                lambda: "the renewer orders a new certificate" in driver.page_source or None,
            )
        )
        problems = [
            entry["message"]
            for entry in driver.get_log("browser")
            if entry["level"] in ("SEVERE", "WARNING")
        ]
        seen["console_problems"] = problems
    finally:
        driver.quit()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
