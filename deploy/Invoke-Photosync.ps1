<#
.SYNOPSIS
  Azure Automation runbook for a hybrid runbook worker: runs one photosync reconcile and
  fails the job when photosync did not do its job.

.DESCRIPTION
  The worker's managed identity (or the Arc server's) authenticates photosync; nothing secret
  is stored in the Automation account. photosync prints its --json summary on stdout, which
  becomes the job output; its log lines go to the job's error stream only on failure.

  Exit codes: 0 ok; 1 a file failed or was invalid; 2 configuration error; 3 could not run
  (authentication, Graph unreachable, another run holds the lock). Anything but 0 throws,
  so the job shows Failed, not Completed: the old runbook's "successful when it failed" is
  exactly what this wrapper exists to prevent.
#>
param(
    [string] $Photosync = 'C:\photosync\Scripts\photosync.exe',
    [string] $Config = 'C:\ProgramData\photosync\photosync.toml',
    [switch] $DryRun
)

$ErrorActionPreference = 'Stop'
$arguments = @('reconcile', '--config', $Config, '--json', '--log-format', 'json')
if ($DryRun) { $arguments += '--dry-run' }

$stderrFile = [System.IO.Path]::GetTempFileName()
try {
    $summary = & $Photosync @arguments 2> $stderrFile
    $code = $LASTEXITCODE
    Write-Output $summary
    if ($code -ne 0) {
        Get-Content $stderrFile | Write-Warning
        $meaning = @{ 1 = 'a photo failed or a file was invalid (run: photosync report unmatched)';
                      2 = 'configuration error'; 3 = 'could not run: auth, Graph unreachable or lock' }[$code]
        throw "photosync exited $code`: $meaning"
    }
}
finally {
    Remove-Item $stderrFile -ErrorAction SilentlyContinue
}
