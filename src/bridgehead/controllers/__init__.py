"""Every background loop of the server in one place: the leased event-log consumer
(:mod:`~bridgehead.controllers.consumers`) and what runs on it, the workflow runner
(:mod:`~bridgehead.controllers.runner`) and the rule engine
(:mod:`~bridgehead.controllers.rules`). ``server/`` only wires them into the app; they sit
below it and never import it."""
