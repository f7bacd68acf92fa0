"""Partner authentication: SMART Backend Services (client assertions, access tokens, scopes)."""
