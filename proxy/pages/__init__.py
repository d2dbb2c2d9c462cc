"""Porter's own pages and endpoints: login, logout, SSO link and tokens, feedback, health."""
