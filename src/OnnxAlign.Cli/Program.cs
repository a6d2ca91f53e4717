using System.CommandLine;
using OnnxAlign.Cli;
using OnnxAlign.Model;

var root = new RootCommand("OnnxAlign: align ONNX diffusion models to rewards at inference time.");
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(ProxCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(QualityCommand.Create());
root.Subcommands.Add(SweepCommand.Create());
root.Subcommands.Add(AlignCommand.Create());
root.Subcommands.Add(VerifyCommand.Create());
StrictNumbers.Apply(root);
return Cli.Run(root, args);

namespace OnnxAlign.Cli
{
    /// <summary>Runs a command and turns the project's documented errors into one line and exit code 2.</summary>
    internal static class Cli
    {
        public static int Run(RootCommand root, string[] args)
        {
            var parsed = root.Parse(args);
            if (parsed.Errors.Count > 0 && parsed.Action is not System.CommandLine.Help.HelpAction)
            {
                foreach (var error in parsed.Errors) Console.Error.WriteLine($"error: {error.Message}");
                return 2;
            }
            try
            {
                return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            catch (Exception e) when (e is ConfigException or FormatException or ArgumentException or UsageException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 2;
            }
        }
    }

    /// <summary>A command-line value that is well-formed but not acceptable (the message names the flag).</summary>
    internal sealed class UsageException(string message) : Exception(message);
}
