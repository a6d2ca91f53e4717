using System.CommandLine;
using OnnxAlign.Cli;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Sampling;

var root = new RootCommand("OnnxAlign: align ONNX diffusion models to rewards at inference time.");
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(ProxCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(QualityCommand.Create());
root.Subcommands.Add(SweepCommand.Create());
root.Subcommands.Add(AlignCommand.Create());
root.Subcommands.Add(VerifyCommand.Create());
root.Subcommands.Add(FitRewardCommand.Create());
root.Subcommands.Add(PlanCommand.Create());
root.Subcommands.Add(MergeCommand.Create());
StrictNumbers.Apply(root);
return Cli.Run(root, args);

namespace OnnxAlign.Cli
{
    /// <summary>
    /// The one error policy of every command: exit 0 done; 2 bad input (one line naming the flag or file, nothing
    /// written); 3 stopped on a NaN/±∞ sample (the job keeps the finished work and a stopped report); 4 infeasible constraints (align); 130 interrupted (Ctrl-C or
    /// SIGTERM, after the current atomic write, with how to resume); 1 anything else — one line on the terminal and the
    /// details in <c>error.log</c> in the output folder (or the temporary folder). No stack trace on the terminal.
    /// </summary>
    internal static class Cli
    {
        public const int Interrupted = 130;

        public static int Run(RootCommand root, string[] args)
        {
            var output = StandardOutput.Install();
            NativeLog.Install();
            try { return RunCommand(root, args); }
            finally { output.Finish(); }
        }

        private static int RunCommand(RootCommand root, string[] args)
        {
            ParseResult parsed;
            try
            {
                parsed = root.Parse(args);
                if (parsed.Errors.Count > 0 && parsed.Action is not System.CommandLine.Help.HelpAction)
                {
                    // One line, as every error: what was not understood first ("Required command was not provided"
                    // says nothing more once an unknown command is named).
                    var messages = parsed.Errors.Select(e => e.Message).Distinct().ToList();
                    if (messages.Any(m => m.StartsWith("Unrecognized", StringComparison.Ordinal)))
                        messages = [.. messages.Where(m => m.StartsWith("Unrecognized", StringComparison.Ordinal)), .. messages.Where(m => !m.StartsWith("Unrecognized", StringComparison.Ordinal) && !m.StartsWith("Required command", StringComparison.Ordinal))];
                    return Say($"error: {string.Join(" ", messages)}", 2);
                }
            }
            catch (Exception e) { return Internal(e, null); }
            using var interrupt = HandleInterrupts(parsed);
            try
            {
                return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            catch (NonFiniteException e)
            {
                return Say($"error: {e.Message}{Kept(parsed, e)}", 3);
            }
            catch (OnnxAlignException e)
            {
                string line = Flags.Describe(e);
                return Say($"error: {line}{NativeLog.Detail(line)}", 2);
            }
            catch (Exception e) when (e is FormatException or ArgumentException or UsageException)
            {
                return Say($"error: {e.Message}{NativeLog.Detail(e.Message)}", 2);
            }
            catch (OutOfMemoryException e)
            {
                return Say($"error: out of memory ({e.Message}); use a smaller --batch or --count", 1);
            }
            catch (IOException e)
            {
                // A full disk, a vanished folder: what the system said, no stack trace, and how to go on.
                return Internal(e, OutputFolder(parsed), brief: $"error: {e.Message}" +
                    (KeptBatches(parsed) is { } kept ? $"; the finished batches are kept in {kept}: free space and rerun the same command with --resume" : ""));
            }
            catch (Exception e)
            {
                return Internal(e, OutputFolder(parsed));
            }
        }

        private static int Say(string line, int code)
        {
            try { Console.Error.WriteLine(line.ReplaceLineEndings(" ").Replace('\0', ' ')); } catch (IOException) { }
            return code;
        }

        private static int Internal(Exception e, string? folder, string? brief = null)
        {
            string log = folder is not null && Directory.Exists(folder) ? Path.Combine(folder, "error.log")
                : Path.Combine(Path.GetTempPath(), $"onnxalign-error-{Environment.ProcessId}.log");
            try { File.WriteAllText(log, $"{DateTime.UtcNow:O}\n{e}\n"); }
            catch (Exception) { log = "(could not be written)"; }
            string first = e.Message.Split('\n')[0];
            return Say(brief is null ? $"error: internal error ({e.GetType().Name}: {first}); details in {log}" : $"{brief}; details in {log}", 1);
        }

        private static string? OutputFolder(ParseResult parsed)
        {
            try
            {
                var option = parsed.CommandResult.Command.Options.FirstOrDefault(o => o.Name == "--out");
                return option is null ? null : parsed.GetResult(option)?.GetValueOrDefault<object>() as string;
            }
            catch (Exception) { return null; }
        }

        /// <summary>
        /// What a run stopped on a NaN/±∞ sample left (the job wrote its finished work and a stopped report), and the
        /// remedy under the command's --on-nan policy.
        /// </summary>
        private static string Kept(ParseResult parsed, NonFiniteException e)
        {
            if (OutputFolder(parsed) is not { } folder || !File.Exists(Path.Combine(folder, "report.json"))) return "";
            var policy = parsed.CommandResult.Command.Options.FirstOrDefault(o => o.Name == "--on-nan") is { } option ? parsed.GetResult(option)?.GetValueOrDefault<object>() as string : null;
            return $"; the finished work was kept in {Path.GetFullPath(folder)} (report.json: status stopped) " + policy switch
            {
                "skip" => "(under --on-nan skip: every particle of an SMC system turned NaN/±∞, nothing was left to weigh)",
                null => "",
                _ => "(--on-nan skip drops such samples and goes on)",
            };
        }

        /// <summary>The full path of the checkpoint an interrupted or stopped run leaves for --resume, or null when there is none.</summary>
        private static string? KeptBatches(ParseResult parsed) =>
            OutputFolder(parsed) is { } folder && Sampling.BatchCheckpoint.Exists(folder)
                ? Path.GetFullPath(Sampling.BatchCheckpoint.PathOf(folder))
                : null;

        /// <summary>Ctrl-C and SIGTERM stop the run between atomic writes, say how to resume, and exit 130.</summary>
        private static IDisposable HandleInterrupts(ParseResult parsed)
        {
            void Stop()
            {
                lock (IO.AtomicFile.WriteGate)
                {
                    Say(KeptBatches(parsed) is { } kept
                        ? $"interrupted: finished batches are kept in {kept}; rerun the same command with --resume to continue"
                        : "interrupted", Interrupted);
                    Environment.Exit(Interrupted);
                }
            }
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; Stop(); };
            Console.CancelKeyPress += onCancel;
            var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; Stop(); });
            return new Unregister(() => { Console.CancelKeyPress -= onCancel; term.Dispose(); });
        }

        private sealed class Unregister(Action action) : IDisposable
        {
            public void Dispose() => action();
        }
    }

    /// <summary>A command-line value that is well-formed but not acceptable (the message names the flag).</summary>
    internal sealed class UsageException(string message) : Exception(message)
    {
        /// <summary>Runs a library read whose errors name the file only, and puts the flag it came from in front.</summary>
        public static T ForFlag<T>(string flag, Func<T> read)
        {
            try { return read(); }
            catch (ConfigException e) { throw new UsageException($"{flag} {Flags.Describe(e)}"); }
        }
    }
}
