<#
.SYNOPSIS
  Grants a managed identity the two Microsoft Graph application roles photosync needs,
  User.Read.All and ProfilePhoto.ReadWrite.All, and nothing more.

.DESCRIPTION
  Uses the Microsoft Graph PowerShell SDK (Install-Module Microsoft.Graph.Applications).
  Run once as an admin who may assign app roles (Privileged Role Administrator or Global
  Administrator). A role the identity already holds is left as it is, so running it again is
  harmless. Afterwards run `photosync doctor` on the server; a managed identity's tokens can
  keep their old roles for up to 24 hours.

.EXAMPLE
  .\Grant-GraphRoles.ps1 -PrincipalId (az connectedmachine show -g MyRg -n my-server --query identity.principalId -o tsv)
#>
param(
    [Parameter(Mandatory = $true)]
    [string] $PrincipalId
)

$ErrorActionPreference = 'Stop'
$graphAppId = '00000003-0000-0000-c000-000000000000'
$roles = @('User.Read.All', 'ProfilePhoto.ReadWrite.All')

Connect-MgGraph -Scopes 'AppRoleAssignment.ReadWrite.All', 'Application.Read.All' -NoWelcome
$graph = Get-MgServicePrincipal -Filter "appId eq '$graphAppId'"
$held = @(Get-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $PrincipalId -All |
          ForEach-Object { $_.AppRoleId })

foreach ($role in $roles) {
    $appRole = $graph.AppRoles | Where-Object { $_.Value -eq $role -and $_.AllowedMemberTypes -contains 'Application' }
    if (-not $appRole) { throw "Microsoft Graph has no app role $role in this cloud" }
    if ($held -contains $appRole.Id) {
        Write-Output "${role}: already granted"
        continue
    }
    New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $PrincipalId `
        -PrincipalId $PrincipalId -ResourceId $graph.Id -AppRoleId $appRole.Id | Out-Null
    Write-Output "${role}: granted"
}
