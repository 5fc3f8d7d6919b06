"""Contract fakes shipped for users' tests (and ours): services that cannot run here, spoken
over their documented protocols, in front of REAL ones where it matters.

- :mod:`bridgehead.testing.yarn_fake`: a YARN ResourceManager's REST API
  (``/ws/v1/cluster/apps``) whose applications run on a real Spark standalone cluster.
- :mod:`bridgehead.testing.livy_fake`: an Apache Livy server's batch API (``/batches``) in
  YARN mode, over that ResourceManager.

Each behaviour names the line of Livy's or Hadoop's source or docs it copies. Run them as
``python -m bridgehead.testing.livy_fake --port ... --spark-rest http://127.0.0.1:6066``.
"""
