"""TS 29.272 ME-Identity-Check on S13/S13', named after its hot path: ``ecr`` (parse the
ECR), ``decision.policy`` (decide), ``eca`` (build the ECA), ``fastpath`` (the common ECR
read with a few byte compares), and ``application`` (``MeIdentityCheck``, which ties
them together for the Diameter peer). Import the modules themselves: this face is empty."""
