"""The UIs: launchers of the Dagster webserver, the Dagster daemon and the MLflow server (`servers`,
behind `d3ke ui`), and a client of the webserver's GraphQL API (`graphql`)."""
