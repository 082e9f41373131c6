#!/usr/bin/env bash
# Grant a managed identity the two Microsoft Graph application roles photosync needs,
# User.Read.All and ProfilePhoto.ReadWrite.All, and nothing more. Run once, with the Azure CLI,
# signed in (az login) as an admin who may assign app roles (Privileged Role Administrator or
# Global Administrator). A role the identity already holds is left as it is, so running it
# again is harmless.
#
#   deploy/grant-graph-roles.sh PRINCIPAL_ID
#
# PRINCIPAL_ID is the managed identity's object id, e.g. on an Azure Arc server:
#   az connectedmachine show -g MyResourceGroup -n my-server --query identity.principalId -o tsv
# Then check from the server: photosync doctor (a managed identity's tokens can keep their old
# roles for up to 24 hours).
set -euo pipefail

readonly GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
readonly ROLES=(User.Read.All ProfilePhoto.ReadWrite.All)

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 PRINCIPAL_ID (the managed identity's object id)" >&2
  exit 2
fi
principal=$1

if ! command -v az >/dev/null 2>&1; then
  echo "$0: the Azure CLI (az) is not installed; install it, run 'az login', then run this again" >&2
  exit 2
fi

graph_sp=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv)
assignments_url="https://graph.microsoft.com/v1.0/servicePrincipals/$principal/appRoleAssignments"
held=$(az rest --method GET --uri "$assignments_url" --query "value[].appRoleId" -o tsv)

for role in "${ROLES[@]}"; do
  role_id=$(az ad sp show --id "$GRAPH_APP_ID" --query "appRoles[?value=='$role'].id" -o tsv)
  if [ -z "$role_id" ]; then
    echo "$0: Microsoft Graph has no app role $role in this cloud" >&2
    exit 1
  fi
  if grep -qx "$role_id" <<<"$held"; then
    echo "$role: already granted"
    continue
  fi
  body=$(printf '{"principalId":"%s","resourceId":"%s","appRoleId":"%s"}' \
    "$principal" "$graph_sp" "$role_id")
  az rest --method POST --uri "$assignments_url" --body "$body" \
    --headers "Content-Type=application/json" --output none
  echo "$role: granted"
done
