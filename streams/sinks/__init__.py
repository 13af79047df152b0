"""Where snapshots end up: Postgres (market_inventory_snapshots) and MongoDB (market_listings)."""
