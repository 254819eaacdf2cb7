#!/usr/bin/env python3
"""Runs python3-etcd3gw's own functional tests (etcd3gw.tests.test_etcd3gw, which talk to
127.0.0.1:2379) with the API path given as argv[1]. etcd3gw 2.0 defaults to /v3alpha/,
which etcd 3.4 no longer serves; its users pass api_path, as this does for the tests.
Exit status 0 only if every test ran (none skipped for want of a server) and passed."""
import sys, unittest
from etcd3gw.client import Etcd3Client
d = list(Etcd3Client.__init__.__defaults__); d[-1] = sys.argv[1]
Etcd3Client.__init__.__defaults__ = tuple(d)
suite = unittest.defaultTestLoader.loadTestsFromName("etcd3gw.tests.test_etcd3gw")
r = unittest.TextTestRunner(verbosity=1).run(suite)
print("ran", r.testsRun, "skipped", len(r.skipped), "failures", len(r.failures), "errors", len(r.errors))
sys.exit(0 if r.wasSuccessful() and not r.skipped else 1)
