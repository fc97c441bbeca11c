"""Node-side differential privacy as the ledger sees it: the claim an update carries, the accountant
that recomputes a node's cumulative ε from its claims, the decision on each claim, and reading a
node's earlier claims from the chain and the blob store.

Shared by the edge node (which writes its claim), the aggregator (which checks it) and the auditor
(which re-checks it), so all three compute ε with the same code. It imports core, chain and store;
Opacus is imported only when ε is computed, so importing this package costs nothing.
"""
